"""Two-process DDP on CPU (gloo, launched by torchrun) through the production shard loader equals one
process that trains on both ranks' batches at once (the same global batch)."""

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from asr_kd.nn.models import load_model
from asr_kd.paths import TrainRunDir
from tests.train_helpers import write_tiny_shards

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]


@pytest.mark.slow
def test_two_process_ddp_equals_single_process(tmp_path):
    shards = str(write_tiny_shards(tmp_path / "shards").root)
    script = ["-m", "tests.resume_script"]
    _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
          *script, str(tmp_path / "ddp"), shards, "--devices", "2", "--strategy", "ddp", "--batch-size", "16",
          "--epochs", "2"])
    _run([sys.executable, *script, str(tmp_path / "single"), shards, "--batch-size", "32", "--epochs", "2",
          "--merge-ranks", "2"])
    a = json.loads((tmp_path / "ddp" / "final.json").read_text())
    b = json.loads((tmp_path / "single" / "final.json").read_text())
    # 2 ranks x 16 frames make the same optimiser steps as 1 process x 32 frames
    assert [r["step"] for r in a["history"]] == [r["step"] for r in b["history"]] == [16, 32]
    for key in ("dev_frame_acc", "test_frame_acc", "train_frame_acc"):
        assert a[key] == pytest.approx(b[key], abs=1e-6), key
    assert [r["train_loss"] for r in a["history"]] == pytest.approx([r["train_loss"] for r in b["history"]], rel=1e-4)
    ma, _ = load_model(TrainRunDir(tmp_path / "ddp").model)
    mb, _ = load_model(TrainRunDir(tmp_path / "single").model)
    for p, q in zip(ma.parameters(), mb.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)
