"""The run-directory lock: one recipe per run dir; a dead holder's lock is taken over."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys

import pytest

from asr_kd.paths import LOCK_NAME
from asr_kd.runlock import RunLocked, acquire, release, run_lock


def _write_lock(root, pid: int, host: str | None = None) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / LOCK_NAME).write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(),
                                              "started": "2026-01-01T00:00:00"}))


@pytest.fixture()
def live_process():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


def test_lock_is_taken_and_released(tmp_path):
    with run_lock(tmp_path):
        holder = json.loads((tmp_path / LOCK_NAME).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_live_holder_keeps_the_run(tmp_path, live_process):
    _write_lock(tmp_path, live_process.pid)
    with pytest.raises(RunLocked, match=f"process {live_process.pid} on this host"):
        acquire(tmp_path)
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == live_process.pid


def test_a_dead_holders_lock_is_taken_over(tmp_path, caplog):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _write_lock(tmp_path, dead.pid)
    with caplog.at_level(logging.WARNING):
        path = acquire(tmp_path)
    assert "no longer running" in caplog.text
    assert json.loads(path.read_text())["pid"] == os.getpid()
    release(path)


def test_another_hosts_lock_is_not_guessed_at(tmp_path):
    _write_lock(tmp_path, 12345, host="some-other-node")
    with pytest.raises(RunLocked, match="host some-other-node.*remove"):
        acquire(tmp_path)


def test_second_recipe_on_a_run_dir_exits_at_once(tmp_path, live_process):
    exp = tmp_path / "exp"
    _write_lock(exp, live_process.pid)
    res = subprocess.run([sys.executable, "-m", "asr_kd.recipes.librispeech", "--preset", "smoke",
                          "--exp-dir", str(exp)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 1
    assert f"in use by process {live_process.pid}" in res.stderr and "Traceback" not in res.stderr
    assert not (exp / "config.json").exists() and not (exp / "prepare").exists()


def test_tasks_of_a_job_array_lock_side_by_side_but_not_beside_a_whole_run(tmp_path, live_process):
    """teachers.only=k tasks share the run directory (their own .lock-teacher-k); a whole run refuses
    while one of them runs, and they refuse while a whole run holds the directory."""
    _write_lock_named = lambda name, pid: (tmp_path / name).write_text(  # noqa: E731
        json.dumps({"pid": pid, "host": socket.gethostname(), "started": "2026-01-01T00:00:00"}))
    tmp_path.mkdir(exist_ok=True)
    _write_lock_named(f"{LOCK_NAME}-teacher-1", live_process.pid)
    mine = acquire(tmp_path, task="teacher-2")  # another task: fine
    assert mine.name == f"{LOCK_NAME}-teacher-2"
    with pytest.raises(RunLocked, match=f"process {live_process.pid}"):
        acquire(tmp_path)  # a whole run while task 1 trains
    release(mine)
    assert not mine.exists()
    (tmp_path / f"{LOCK_NAME}-teacher-1").unlink()
    _write_lock(tmp_path, live_process.pid)  # a whole run holds it
    with pytest.raises(RunLocked, match=f"process {live_process.pid}"):
        acquire(tmp_path, task="teacher-0")


def test_a_dead_tasks_lock_does_not_block_a_whole_run(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / f"{LOCK_NAME}-teacher-0").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    release(acquire(tmp_path))
