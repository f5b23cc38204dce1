"""Processes: which rank this one is, and the one way to map a function over worker processes.

* :func:`process_group`, :func:`rank_and_world`, :func:`global_rank`: the process's place in a
  distributed run (torch.distributed when initialised, else the launcher's environment:
  torchrun's ``RANK``, SLURM's ``SLURM_PROCID``, Lightning's DDP launcher's ``LOCAL_RANK``/``NODE_RANK``).
* :func:`worker_map`: ``fn`` over items, in order, in ``jobs`` worker processes (or threads), or in
  this process when ``jobs <= 1``. With ``start="fork"`` the workers inherit ``fn`` instead of
  receiving it pickled, so ``fn`` may be a closure over a decoder, a graph or a model.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

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
