"""One recipe process per run directory: ``<exp>/.lock``.

Two recipes writing into one run directory corrupt each other's checkpoints and logs, so the
recipe takes the lock before any stage runs and holds it until it exits:

* the lock is a file created with ``O_CREAT | O_EXCL`` (atomic on local disks and on NFS v3+,
  unlike ``flock``, which NFS may not honour across hosts); it records the holder's PID, host and
  start time;
* a second process finds the file and exits at once, naming the holder;
* a lock left by a dead process on *this* host (its PID no longer runs) is stale: it is taken over
  with a warning. A lock held from another host cannot be checked from here: the message says how
  to remove it if that run is really gone;
* under DDP only rank 0 takes it (the other ranks are its children / its job); the ranks a plain
  command starts for ``train.devices=N`` (:func:`asr_kd.parallel.start_ranks`) run under the lock
  of that command, which their rank 0 finds named in its environment and uses as its own.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from asr_kd.parallel import LOCK_PARENT_ENV  # the PID of the command that holds the lock for its ranks
from asr_kd.paths import LOCK_NAME

log = logging.getLogger(__name__)



class RunLocked(RuntimeError):
    """Another live process holds the run directory."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by someone else
    return True


def _holder(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _create(path: Path) -> bool:
    """Create the lock file exclusively with our PID and host; False if it exists."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump({"pid": os.getpid(), "host": socket.gethostname(),
                   "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, f)
        f.write("\n")
    return True


def _live_holder(path: Path) -> dict | None:
    """The holder of lock file ``path`` if it may still run (alive on this host, or on another host,
    which cannot be checked from here); None if there is no such file or its holder is dead."""
    holder = _holder(path)
    if not holder and not path.exists():
        return None
    pid, host = holder.get("pid"), holder.get("host")
    if host == socket.gethostname() and isinstance(pid, int) and not _pid_alive(pid):
        return None
    return holder


def _refusal(root: Path, path: Path, holder: dict) -> RunLocked:
    pid, host = holder.get("pid", "?"), holder.get("host", "?")
    where = "this host" if host == socket.gethostname() else f"host {host}"
    return RunLocked(f"{root} is in use by process {pid} on {where} (since {holder.get('started', '?')}); "
                     f"wait for it to finish or stop it. If that run is gone (e.g. its node died), "
                     f"remove {path} and start again")


def acquire(root: Path, task: str | None = None) -> Path:
    """Take ``root/.lock`` or raise :class:`RunLocked` naming the holder.

    ``task`` (e.g. ``"teacher-3"``, one task of a job array): take ``root/.lock-<task>`` instead,
    which tasks of other names may hold at the same time; it is refused while a whole-run lock is
    held, and a whole-run lock is refused while a task lock is."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / (LOCK_NAME if task is None else f"{LOCK_NAME}-{task}")
    others = [root / LOCK_NAME] if task is not None else sorted(root.glob(f"{LOCK_NAME}-*"))
    for other in others:
        holder = _live_holder(other)
        if holder is not None and str(holder.get("pid")) != os.environ.get(LOCK_PARENT_ENV):
            raise _refusal(root, other, holder)
    for _ in range(3):  # a stale lock is removed, then the create is retried
        if _create(path):
            return path
        holder = _holder(path)
        pid, host = holder.get("pid"), holder.get("host")
        if not isinstance(pid, int) or not host:
            # Half-written by a process killed between create and write: treat as stale once old.
            if time.time() - path.stat().st_mtime < 10:
                time.sleep(1.0)
                continue
            log.warning("removing unreadable lock %s", path)
        elif host == socket.gethostname() and (pid == os.getpid() or str(pid) == os.environ.get(LOCK_PARENT_ENV)):
            return path  # ours, or held for us by the command that started these ranks
        elif host == socket.gethostname() and not _pid_alive(pid):
            log.warning("taking over the lock of process %d on %s, which is no longer running (%s)", pid, host, path)
        else:
            raise _refusal(root, path, holder)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    raise RunLocked(f"could not take the lock {path}; remove it if no run is using {root}")


def release(path: Path) -> None:
    """Remove the lock if it is still ours."""
    holder = _holder(path)
    if holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def run_lock(root: Path, take: bool = True, task: str | None = None) -> Iterator[None]:
    """Hold ``root/.lock`` (or a task's lock, :func:`acquire`) for the block (``take=False``: a DDP
    rank other than 0, no lock)."""
    if not take:
        yield
        return
    path = acquire(root, task)
    try:
        yield
    finally:
        release(path)
