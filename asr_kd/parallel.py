"""Processes: which rank this one is, and the one way to map a function over worker processes.

* :func:`process_group`, :func:`rank_and_world`, :func:`global_rank`: the process's place in a
  distributed run (torch.distributed when initialised, else the launcher's environment:
  torchrun's ``RANK``, SLURM's ``SLURM_PROCID``, Lightning's DDP launcher's ``LOCAL_RANK``/``NODE_RANK``).
* :func:`distributed_session`, :func:`on_rank_zero`, :func:`barrier`: the whole recipe under a
  multi-process launcher (torchrun, ``srun``): the process group is set up before any stage runs,
  rank 0 does the work of the stages that are not distributed while the other ranks wait for its
  outcome (its error ends them too).
* :func:`plan_launch`, :func:`start_ranks`: how a command a user typed runs its training stages:
  in this one process, as one rank of a launcher's job (torchrun, ``srun``), or, for a plain command
  asking for several devices, as the parent of its own ranks (started through torchrun); anything
  else is refused in one line before any stage starts.
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
from dataclasses import dataclass
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
# How a launch runs its training stages
# ---------------------------------------------------------------------------------------------
# Set in the environment of the ranks a plain command starts (start_ranks): the PID of that parent,
# which holds the run lock for them (asr_kd.runlock accepts it as rank 0's own).
LOCK_PARENT_ENV = "ASR_KD_LOCK_PARENT"
_SPAWNING_STRATEGIES = ("spawn", "fork", "notebook")  # Lightning strategies that start ranks in-process


class LaunchRefused(ValueError):
    """The command cannot run its training stages as launched; the message names the command that works."""


@dataclass(frozen=True)
class Launch:
    """``kind``: ``"single"`` (this process is the whole run), ``"joined"`` (one rank of a
    torchrun / srun job), ``"spawn"`` (a plain command that starts ``processes`` ranks itself)."""

    kind: str
    processes: int = 1
    launcher: str = ""


def _srun_tasks() -> int:
    """Tasks of the SLURM job step this process is one of, as Lightning's SLURM environment counts
    them (1 outside SLURM, and in an interactive allocation: job name ``bash`` or ``interactive``)."""
    if os.environ.get("SLURM_JOB_NAME") in ("bash", "interactive"):
        return 1
    n = os.environ.get("SLURM_NTASKS", "1")
    return int(n) if n.isdigit() else 1


def devices_per_node(accelerator: str, devices: str) -> int:
    """``train.devices`` as a count of processes per node: an int, a list of ids ("0,1"), or
    "auto" / "-1" (every visible GPU where the accelerator may take one, else one process)."""
    text = devices.strip()
    if text.isdigit():
        return max(int(text), 1)
    if "," in text:
        return max(len([d for d in text.split(",") if d.strip()]), 1)
    import torch

    gpu = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    return max(torch.cuda.device_count(), 1) if gpu else 1


def plan_launch(accelerator: str, devices: str, num_nodes: int, strategy: str, *, training: bool) -> Launch:
    """How this process runs a recipe whose stages include training (``training``) or not.

    Raises :class:`LaunchRefused` (one line naming the command that works) for what cannot run:
    a GPU asked for where there is none, several nodes from a plain command, a launcher whose
    process count is not ``train.devices x train.num_nodes``, ``srun -n N`` without
    ``--ntasks-per-node``, or a launcher asr-kd does not join."""
    world = os.environ.get("WORLD_SIZE", "1")
    elastic = "TORCHELASTIC_RUN_ID" in os.environ
    tasks = _srun_tasks()
    if elastic and world.isdigit() and int(world) > 1:
        launcher, launched = "torchrun", int(world)
    elif tasks > 1:
        launcher, launched = "srun", tasks
    elif "LOCAL_RANK" in os.environ and world.isdigit() and int(world) > 1:
        raise LaunchRefused(
            "this process was started by a launcher asr-kd does not join (LOCAL_RANK and WORLD_SIZE set, "
            "neither torchrun nor srun): start the recipe with a plain command (it starts its own ranks "
            "for train.devices=N), with torchrun, or with srun --ntasks-per-node=N")
    else:
        launcher, launched = "", 1
    if not training:
        return Launch("joined" if launched > 1 else "single", launched, launcher)

    if accelerator in ("gpu", "cuda"):
        import torch

        if not torch.cuda.is_available():
            raise LaunchRefused(
                f"train.accelerator={accelerator} but no CUDA device is visible on this machine; run the "
                "training stages on a GPU node, or add --set train.accelerator=cpu")
    per_node = devices_per_node(accelerator, devices)
    wanted = per_node * max(num_nodes, 1)
    if launcher == "srun" and "SLURM_NTASKS_PER_NODE" not in os.environ:
        raise LaunchRefused(
            f"srun started {launched} tasks without --ntasks-per-node, which Lightning refuses: use "
            f"srun --nodes=N --ntasks-per-node=G (G = train.devices per node)")
    if launched > 1:
        if launched != wanted:
            raise LaunchRefused(
                f"{launcher} started {launched} processes but train.devices x train.num_nodes = "
                f"{per_node} x {num_nodes} = {wanted}: add --set train.devices=<processes per node> "
                f"--set train.num_nodes=<nodes> to match the launch")
        return Launch("joined", launched, launcher)
    if num_nodes > 1:
        raise LaunchRefused(
            f"train.num_nodes={num_nodes} needs one process per device on every node: start the recipe "
            f"with srun --nodes={num_nodes} --ntasks-per-node={per_node} (recipes/librispeech/slurm/), "
            f"or torchrun on each node")
    if per_node == 1:
        return Launch("single")
    if any(word in strategy for word in _SPAWNING_STRATEGIES):
        raise LaunchRefused(
            f"train.strategy={strategy} starts ranks inside one training run, which the recipe's other "
            f"stages cannot follow: use --set train.strategy=ddp (the recipe then starts {per_node} ranks)")
    return Launch("spawn", per_node, "torchrun")


def _end_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """The started launcher gets SIGTERM if the recipe process that started it dies (even by SIGKILL)."""
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def start_ranks(processes: int, module: str, argv: Sequence[str]) -> int:
    """Run ``python -m module argv`` as ``processes`` ranks on this node through torchrun
    (``--standalone``: a free local port), wait for them and return their exit status.

    The ranks are what ``torchrun --standalone --nproc-per-node=N`` would start, with the run lock
    passed to them (:data:`LOCK_PARENT_ENV`) and, unless set, ``OMP_NUM_THREADS`` = cores / ranks.
    SIGTERM and SIGINT to this process reach them (torchrun stops its ranks), and they end if this
    process dies."""
    import signal
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
           "-m", module, *argv]
    env = dict(os.environ)
    env[LOCK_PARENT_ENV] = str(os.getpid())
    env.setdefault("OMP_NUM_THREADS", str(max((os.cpu_count() or 1) // processes, 1)))
    log.info("starting %d ranks on this node: %s", processes, " ".join(cmd[1:6]) + " ...")
    proc = subprocess.Popen(cmd, env=env, preexec_fn=_end_with_parent if sys.platform == "linux" else None)
    forward = {sig: signal.signal(sig, lambda s, _f: proc.send_signal(s)) for sig in (signal.SIGTERM,)}
    try:
        while True:
            try:
                return proc.wait()
            except KeyboardInterrupt:  # Ctrl-C reached the ranks too (same process group): wait for them
                continue
    finally:
        for sig, old in forward.items():
            signal.signal(sig, old)


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
