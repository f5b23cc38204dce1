"""Processes: which rank this one is, and the one way to map a function over worker processes.

* :func:`process_group`, :func:`rank_and_world`, :func:`global_rank`: the process's place in a
  distributed run (torch.distributed when initialised, else the launcher's environment:
  torchrun's ``RANK``, SLURM's ``SLURM_PROCID``, Lightning's DDP launcher's ``LOCAL_RANK``/``NODE_RANK``).
* :func:`distributed_session`, :func:`on_rank_zero`, :func:`barrier`: the whole recipe under a
  multi-process launcher (torchrun, ``srun``): the process group is set up before any stage runs,
  rank 0 does the work of the stages that are not distributed while the other ranks wait for its
  outcome (its error ends them too).
* :func:`worker_map`: ``fn`` over items, in order, in ``jobs`` worker processes (or threads), or in
  this process when ``jobs <= 1``. With ``start="fork"`` the workers inherit ``fn`` instead of
  receiving it pickled, so ``fn`` may be a closure over a decoder, a graph or a model.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

log = logging.getLogger(__name__)

START_METHODS = ("fork", "spawn", "thread")


# ---------------------------------------------------------------------------------------------
# Rank
# ---------------------------------------------------------------------------------------------
def process_group() -> tuple[int, int] | None:
    """``(rank, world_size)`` of the initialised torch.distributed process group; None outside one."""
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - torch is a dependency
        return None
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return None


def _env_rank() -> int:
    for var in ("RANK", "SLURM_PROCID"):
        if var in os.environ:
            try:
                return int(os.environ[var])
            except ValueError:
                pass
    # Lightning's DDP launcher re-runs the script with LOCAL_RANK/NODE_RANK set.
    if "LOCAL_RANK" in os.environ:
        local = int(os.environ["LOCAL_RANK"])
        node = int(os.environ.get("NODE_RANK", "0"))
        per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        return node * per_node + local
    return 0


def global_rank() -> int:
    """This process's rank (0 outside distributed runs): torch.distributed's when initialised, else
    the one torchrun / SLURM / Lightning's launcher set in the environment."""
    group = process_group()
    return group[0] if group else _env_rank()


def rank_and_world(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """``(rank, world_size)``: explicit values, else torch.distributed if initialised, else
    ``RANK`` / ``WORLD_SIZE`` of the environment (0, 1 outside distributed runs)."""
    if rank is not None and world_size is not None:
        r, w = rank, world_size
    else:
        r, w = process_group() or (int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")))
    if not 0 <= r < w:
        raise ValueError(f"rank {r} is not in [0, world_size={w})")
    return r, w


# ---------------------------------------------------------------------------------------------
# The whole recipe as several processes (torchrun, srun)
# ---------------------------------------------------------------------------------------------
# How long ranks > 0 wait for rank 0 at a stage it runs alone (an alignment or a decode of 960 h
# takes hours): the timeout of the gloo group the stage outcomes travel on. A rank 0 that dies
# ends the wait at once (its connections close); only a rank 0 that hangs is waited for this long.
STAGE_WAIT = timedelta(days=7)

_CONTROL: list[Any] = []  # the gloo group of stage outcomes, made by the first on_rank_zero call


class RankZeroFailed(RuntimeError):
    """Raised on ranks > 0 when rank 0 failed at a step they waited for (rank 0 reports the error)."""


def _launcher() -> Any | None:
    """Lightning's cluster environment of the launcher that started this process as one of several
    (torchrun, or ``srun`` with more than one task), else None."""
    several = [os.environ.get(var, "1") for var in ("WORLD_SIZE", "SLURM_NTASKS")]
    if not any(n.isdigit() and int(n) > 1 for n in several):
        return None  # one process: no need to import Lightning to find out
    from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    for env_cls in (TorchElasticEnvironment, SLURMEnvironment):
        if env_cls.detect():
            env = env_cls()
            return env if env.world_size() > 1 else None
    return None


def _backend(accelerator: str) -> str:
    import torch

    return "nccl" if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available() else "gloo"


@contextlib.contextmanager
def distributed_session(accelerator: str = "auto") -> Iterator[bool]:
    """Join the process group of a multi-process launch (torchrun, or ``srun`` with several tasks)
    for the block; yields whether this process is one of several.

    The group is the one Lightning's DDP then uses (it does not make its own when one exists):
    nccl where CUDA is used (``accelerator`` auto/gpu/cuda), else gloo. Started any other way
    (one process; Lightning's own DDP launcher, which starts the other ranks inside ``fit``) this
    does nothing.
    """
    import torch.distributed as dist

    env = None if dist.is_initialized() else _launcher()
    if env is None:
        yield process_group() is not None
        return
    backend = _backend(accelerator)
    if backend == "nccl":
        import torch

        torch.cuda.set_device(env.local_rank())
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = env.main_address, str(env.main_port)
    dist.init_process_group(backend, rank=env.global_rank(), world_size=env.world_size())
    log.debug("rank %d of %d joined the process group (%s)", env.global_rank(), env.world_size(), backend)
    try:
        yield True
    finally:
        _CONTROL.clear()
        with contextlib.suppress(Exception):  # never mask the error that ends the run
            dist.destroy_process_group()


def _control_group() -> Any | None:
    """The gloo group (long timeout) stage outcomes travel on; None outside a multi-process group.
    Made at the first call, which every rank reaches in the same order (it is collective)."""
    group = process_group()
    if group is None or group[1] == 1:
        return None
    if not _CONTROL:
        import torch.distributed as dist

        _CONTROL.append(dist.new_group(backend="gloo", timeout=STAGE_WAIT))
    return _CONTROL[0]


def on_rank_zero(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` on rank 0 only, its (picklable) result returned on every rank, which all wait
    for it. If it raises, rank 0 re-raises and every other rank raises :class:`RankZeroFailed`
    (so no rank waits forever for a rank 0 that gave up). Outside a multi-process group: ``fn(*args)``.
    """
    group = _control_group()
    if group is None:
        return fn(*args)
    import torch.distributed as dist

    box: list[Any] = [None]
    if dist.get_rank() == 0:
        try:
            box[0] = ("ok", fn(*args))
        except BaseException as e:
            first = (str(e).strip().splitlines() or [""])[0]
            box[0] = ("failed", f"{type(e).__name__}: {first}" if first else type(e).__name__)
            with contextlib.suppress(Exception):
                dist.broadcast_object_list(box, src=0, group=group)
            raise
    dist.broadcast_object_list(box, src=0, group=group)
    status, value = box[0]
    if status == "failed":
        raise RankZeroFailed(f"rank 0 failed ({value}); its error and log say more")
    return value


def barrier() -> None:
    """Wait for every rank of the process group (nothing outside one)."""
    group = process_group()
    if group is not None and group[1] > 1:
        import torch.distributed as dist

        dist.barrier()


# ---------------------------------------------------------------------------------------------
# Worker processes
# ---------------------------------------------------------------------------------------------
_INHERITED: Callable[[Any], Any] | None = None  # set before forking; the forked workers call it


def _call_inherited(item: Any) -> Any:
    assert _INHERITED is not None
    return _INHERITED(item)


def worker_map(fn: Callable[[Any], Any], items: Sequence[Any] | Iterable[Any], jobs: int, *,
               start: str = "fork", chunksize: int = 1) -> Iterator[Any]:
    """``fn(item)`` for each item, in order, computed in ``jobs`` workers; in this process when
    ``jobs <= 1`` (or when ``fork`` is not available on this platform).

    ``start``: ``fork`` (``fn`` inherited, not pickled: it may be a closure), ``spawn`` (``fn`` and
    items pickled; for work that imports torch, whose threads make forking unsafe) or ``thread``
    (for I/O that releases the GIL). Results are yielded as they arrive, in item order.
    """
    if start not in START_METHODS:
        raise ValueError(f"start must be one of {START_METHODS}, got {start!r}")
    if jobs <= 1 or (start == "fork" and "fork" not in mp.get_all_start_methods()):
        yield from map(fn, items)
        return
    if start == "thread":
        with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="worker") as threads:
            yield from threads.map(fn, items)
        return
    if start == "spawn":
        with mp.get_context("spawn").Pool(jobs) as pool:
            yield from pool.imap(fn, items, chunksize=chunksize)
        return
    global _INHERITED
    _INHERITED = fn
    try:
        with mp.get_context("fork").Pool(jobs) as pool:
            yield from pool.imap(_call_inherited, items, chunksize=chunksize)
    finally:
        _INHERITED = None
