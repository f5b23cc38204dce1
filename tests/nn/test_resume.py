"""A teacher run killed mid-epoch (SIGKILL) resumes from last.ckpt to the same final result, reading its
training data through the production shard loader (streamed windows)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from asr_kd.nn.models import load_model
from asr_kd.paths import TrainRunDir
from tests.train_helpers import write_tiny_shards

REPO = Path(__file__).resolve().parents[2]


def _run(run_dir: Path, *extra: str) -> subprocess.Popen:
    shards = run_dir.parent / "shards"
    if not shards.exists():
        write_tiny_shards(shards)
    return subprocess.Popen([sys.executable, "-m", "tests.resume_script", str(run_dir), str(shards), *extra], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _steps(run_dir: Path) -> list[int]:
    f = run_dir / "steps.txt"
    return [int(s) for s in f.read_text().split()] if f.exists() else []


@pytest.mark.slow
def test_killed_teacher_resumes_to_same_result(tmp_path):
    ref = _run(tmp_path / "ref")
    _, err = ref.communicate(timeout=120)
    assert ref.returncode == 0, err[-3000:]

    victim = tmp_path / "victim"
    proc = _run(victim, "--slow", "0.15")
    deadline = time.time() + 90
    # 16 steps per epoch, last.ckpt every 5 steps: kill in epoch 2 after the step-20 checkpoint
    while time.time() < deadline and not any(s >= 23 for s in _steps(victim)):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = max(_steps(victim))
    assert 20 < killed_at < 48, killed_at  # mid-run, mid-epoch
    ckpt = torch.load(TrainRunDir(victim).last_ckpt, weights_only=False)
    assert 0 < ckpt["global_step"] < 48 and ckpt["global_step"] % 16 != 0  # a mid-epoch checkpoint
    assert not TrainRunDir(victim).done.exists()

    again = _run(victim)
    _, err = again.communicate(timeout=120)
    assert again.returncode == 0, err[-3000:]
    resumed = _steps(victim)
    assert resumed[-1] == 48 and min(resumed[resumed.index(killed_at) + 1:]) > ckpt["global_step"]

    a = json.loads((tmp_path / "ref" / "final.json").read_text())
    b = json.loads((victim / "final.json").read_text())
    for key in ("dev_frame_acc", "test_frame_acc", "train_frame_acc"):
        assert b[key] == pytest.approx(a[key], abs=1e-6), key
    assert [r["train_loss"] for r in b["history"]] == pytest.approx([r["train_loss"] for r in a["history"]], rel=1e-5)
    ma, _ = load_model(TrainRunDir(tmp_path / "ref").model)
    mb, _ = load_model(TrainRunDir(victim).model)
    for p, q in zip(ma.parameters(), mb.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
