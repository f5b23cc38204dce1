"""The whole recipe as 2 processes (gloo, CPU), through the commands a user types: a plain command
with ``train.devices=2`` (which starts its ranks through torchrun), and torchrun itself.

To stay cheap in CI the run starts from a copy of the session's one-process smoke run holding the
costly stages before training and the graph (prepare, lang, features, align, graph): under
torchrun those are found done and skipped on every rank (the resume path). A data stage, shards,
then runs on rank 0 alone (and must write the one-process run's shards, member for member), the
training stages (teachers, distill) run on both ranks, and ensemble, decode, export and report run
on rank 0 alone while rank 1 waits. The report must match the one-process run's: 2 ranks x batch 128
read exactly the batches of 1 process x batch 256 (``train.batch_size`` is per rank; the in-memory
training set slices one-process batches over the ranks), so they differ only by float rounding
(the order DDP sums gradients in), which ~850 Adam steps amplify: measured on the smoke teachers,
train loss within 2e-4 after epoch 0, dev frame accuracy within 0.8 points after a 4th epoch.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from tests.run_compare import COPIED, assert_reports_match, copy_until_training, single_temperature

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args: str, timeout: float = 1200) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                           f"--master_port={_free_port()}", "-m", "asr_kd.recipes.librispeech", *args,
                           "--set", "train.devices=2", "--set", "train.strategy=ddp", "--set", "train.accelerator=cpu"],
                          cwd=REPO, capture_output=True, text=True, timeout=timeout)


def plain(*args: str, timeout: float = 1200, **kw) -> subprocess.CompletedProcess | subprocess.Popen:
    """The plain command a user types on a one-node machine, asking Lightning for 2 CPU devices."""
    cmd = [sys.executable, "-m", "asr_kd.recipes.librispeech", *args,
           "--set", "train.devices=2", "--set", "train.strategy=ddp", "--set", "train.accelerator=cpu"]
    if kw.pop("background", False):
        return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def _shard_members(exp: Path) -> dict[str, bytes]:
    out = {}
    for shard in sorted((exp / "shards").rglob("*.tar")):
        with tarfile.open(shard) as tar:
            for m in tar.getmembers():
                out[f"{shard.relative_to(exp)}/{m.name}"] = tar.extractfile(m).read()
    assert out
    return out


def test_plain_command_with_two_devices_matches_one_process(smoke_run, smoke_corpus, tmp_path):
    """``python -m asr_kd.recipes.librispeech ... --set train.devices=2 --set train.strategy=ddp``:
    the command starts its 2 ranks (torchrun's --standalone) and holds the run lock for them, so a
    second recipe on the run directory is refused while they train; the report matches one process."""
    exp = tmp_path / "exp"
    copy_until_training(smoke_run, exp)
    # One student, at the temperature the one-process run's Table-5 soft run used (CI time: the
    # other student adds a training run and its decoding, and no new code path).
    T = single_temperature(smoke_run)
    args = ["--preset", "smoke", "--data-root", str(smoke_corpus), "--exp-dir", str(exp),
            "--set", "train.batch_size=128",  # per rank: 2 x 128 = the one-process batch of 256
            "--set", f"distill.temperatures={T:g}", "--set", f"distill.subset_temperature={T:g}"]
    t0 = time.time()
    first = plain(*args, background=True)
    teachers = exp / "teachers"
    while not teachers.exists() and first.poll() is None and time.time() - t0 < 600:
        time.sleep(0.5)  # the training stage has started: the ranks are running
    second = plain(*args, timeout=120)
    out, err = first.communicate(timeout=1200)
    res = subprocess.CompletedProcess(first.args, first.returncode, out, err)
    wall = time.time() - t0
    assert res.returncode == 0, res.stderr[-4000:]
    print(f"plain 2-device recipe: {wall:.0f} s")
    assert second.returncode == 1
    assert f"is in use by process {first.pid} on this host" in second.stderr, second.stderr[-2000:]
    assert "starting 2 ranks on this node" in res.stderr

    log = res.stdout + res.stderr
    for stage in COPIED:
        assert f"stage {stage:<9} done, skipping" in log
    assert log.count("stage shards    running") == 1  # rank 0 alone
    assert _shard_members(exp) == _shard_members(smoke_run)
    # rank 0 tells the story once; rank 1 logs only warnings, tagged
    assert log.count("stage decode    running") == 1 and "[rank 1] asr_kd.runner" not in log
    summary = json.loads((exp / "distill" / "DONE.json").read_text())
    assert summary["work"]["train"]["batch_size"] == 256  # hashed as the global batch: one process's
    assert not (exp / ".lock").exists()

    assert_reports_match(smoke_run, exp, T)

    # the same run under torchrun finds every stage done on every rank
    again = torchrun(*args, timeout=300)
    assert again.returncode == 0, again.stderr[-4000:]
    assert "running" not in again.stderr.replace("Running", "")
    from asr_kd.paths import STAGE_NAMES

    assert (again.stdout + again.stderr).count("done, skipping") == len(STAGE_NAMES)


def test_rank_zero_failure_ends_every_rank(tmp_path):
    """A stage rank 0 runs alone fails: rank 0 says why, rank 1 stops too (no hang), both exit 1."""
    res = torchrun("--preset", "smoke", "--data-root", str(tmp_path / "no-such-corpus"),
                   "--exp-dir", str(tmp_path / "exp"), "--stop-stage", "prepare", timeout=300)
    assert res.returncode != 0
    assert "error: rank 1 stops: rank 0 failed" in res.stderr
    assert res.stderr.count("no-such-corpus") >= 1
    assert not (tmp_path / "exp" / ".lock").exists()
