"""How a launch runs the training stages (asr_kd.parallel.plan_launch), the run lock a plain
command holds for the ranks it starts, and the one-line refusals of what cannot run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from asr_kd.parallel import LOCK_PARENT_ENV, LaunchRefused, plan_launch
from asr_kd.paths import LOCK_NAME
from asr_kd.runlock import RunLocked, acquire, release

REPO = Path(__file__).resolve().parents[1]
LAUNCH_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "TORCHELASTIC_RUN_ID", "SLURM_NTASKS", "SLURM_NTASKS_PER_NODE",
               "SLURM_JOB_NAME", "SLURM_PROCID", LOCK_PARENT_ENV)


@pytest.fixture(autouse=True)
def plain_environment(monkeypatch):
    for var in LAUNCH_VARS:
        monkeypatch.delenv(var, raising=False)


def cpu(devices="1", num_nodes=1, strategy="ddp", training=True):
    return plan_launch("cpu", devices, num_nodes, strategy, training=training)


def test_plain_command_with_several_devices_starts_its_ranks():
    assert cpu("1").kind == "single"
    launch = cpu("2")
    assert (launch.kind, launch.processes, launch.launcher) == ("spawn", 2, "torchrun")
    assert cpu("0,1", strategy="auto").processes == 2
    assert cpu("4", training=False).kind == "single"  # no training stage to run: one process does it


def test_torchrun_and_srun_ranks_join(monkeypatch):
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert cpu("2") == cpu("2")  # deterministic
    assert (cpu("2").kind, cpu("2").launcher) == ("joined", "torchrun")
    for var in ("TORCHELASTIC_RUN_ID", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var)
    monkeypatch.setenv("SLURM_NTASKS", "4")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "2")
    assert (cpu("2", num_nodes=2).kind, cpu("2", num_nodes=2).launcher) == ("joined", "srun")


@pytest.mark.parametrize("env, args, words", [
    ({"TORCHELASTIC_RUN_ID": "x", "WORLD_SIZE": "2"}, {"devices": "1"}, "torchrun started 2 processes"),
    ({"SLURM_NTASKS": "2"}, {"devices": "2"}, "--ntasks-per-node"),
    ({"SLURM_NTASKS": "4", "SLURM_NTASKS_PER_NODE": "4"}, {"devices": "2"}, "srun started 4 processes"),
    ({"WORLD_SIZE": "2", "LOCAL_RANK": "1"}, {"devices": "2"}, "does not join"),
    ({}, {"devices": "2", "num_nodes": 2}, "srun --nodes=2 --ntasks-per-node=2"),
    ({}, {"devices": "2", "strategy": "ddp_spawn"}, "--set train.strategy=ddp"),
])
def test_what_cannot_run_is_refused_naming_what_works(monkeypatch, env, args, words):
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    with pytest.raises(LaunchRefused, match=words.replace(".", r"\.").replace("-", r"\-")):
        cpu(**args)


def test_a_gpu_preset_on_a_machine_without_one_is_refused(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(LaunchRefused, match="train.accelerator=cpu"):
        plan_launch("gpu", "auto", 1, "ddp", training=True)
    assert plan_launch("gpu", "auto", 1, "ddp", training=False).kind == "single"  # data stages on a CPU node


def test_ranks_use_the_lock_their_command_holds(tmp_path, monkeypatch):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": child.pid, "host": os.uname().nodename}))
        with pytest.raises(RunLocked, match=f"in use by process {child.pid}"):
            acquire(tmp_path)  # another recipe
        monkeypatch.setenv(LOCK_PARENT_ENV, str(child.pid))
        path = acquire(tmp_path)  # rank 0 of the ranks that command started
        release(path)
        assert path.exists(), "a rank never removes the lock its command holds"
    finally:
        child.kill()
        child.wait()


def test_gpu_preset_refused_in_one_line_before_any_stage(tmp_path):
    """On this GPU-less machine the 100 h preset's training cannot run: one line, nothing written."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible")
    exp = tmp_path / "exp"
    res = subprocess.run([sys.executable, "-m", "asr_kd.recipes.librispeech", "--preset", "librispeech-100h",
                          "--data-root", str(tmp_path / "LibriSpeech"), "--exp-dir", str(exp)],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--set train.accelerator=cpu" in errors[0], res.stderr
    assert not exp.exists()
