"""The decode stage's search processes: one pool, forked once, for every system and split.

:func:`asr_kd.parallel.worker_map` makes a pool per call; the decode stage used it per chunk of
64 utterances, so a 100 h decode forked (and tore down) hundreds of pools and pickled to them, per
acoustic scale, a (frames x transition ids) score matrix. Here the pool is forked once, after the
graphs and GMMs are read (the workers share them copy-on-write) and before any network runs
(the workers never use CUDA). A task is one utterance: the searcher's name, the utterance,
its data (the unscaled pseudo log-likelihoods (T, N) of a DNN, or a GMM's features) and the
scales to search it at; the worker applies each scale itself (``Decoder.decode_log_likelihoods``).

:meth:`SearchPool.submit` returns at once; the caller computes the next chunk's posteriors (on
the GPU) while the workers search, then collects. With ``jobs <= 1`` (or no ``fork`` on the
platform) the tasks run in this process when collected.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from asr_kd.decoding.search import Hypothesis

log = logging.getLogger(__name__)

# (utt, data, acoustic scale) -> hypothesis; a closure over a decoder, inherited by the workers
Searcher = Callable[[str, Any, float], Hypothesis]
SearchTask = tuple[str, str, Any, tuple[float, ...]]  # (searcher name, utt, data, scales)

_SEARCHERS: dict[str, Searcher] = {}  # set before forking; the forked workers use their copy


def run_task(task: SearchTask, searchers: Mapping[str, Searcher] | None = None) -> list[Hypothesis]:
    """One utterance searched at each of its scales (in a worker: the searchers it inherited)."""
    name, utt, data, scales = task
    search = (_SEARCHERS if searchers is None else searchers)[name]
    return [search(utt, data, s) for s in scales]


class Pending:
    """The hypotheses of submitted tasks, in task order, once :meth:`get` is called."""

    def __init__(self, tasks: Sequence[SearchTask], searchers: Mapping[str, Searcher],
                 async_result: Any = None) -> None:
        self._tasks = tasks
        self._searchers = searchers
        self._async = async_result

    def get(self) -> list[list[Hypothesis]]:
        if self._async is not None:
            return self._async.get()
        return [run_task(t, self._searchers) for t in self._tasks]


class SearchPool:
    """``jobs`` search processes forked once with ``searchers``; a context manager."""

    def __init__(self, searchers: Mapping[str, Searcher], jobs: int) -> None:
        global _SEARCHERS
        _SEARCHERS = self.searchers = dict(searchers)
        self.jobs = jobs if jobs > 1 and "fork" in mp.get_all_start_methods() else 1
        self._pool = mp.get_context("fork").Pool(self.jobs) if self.jobs > 1 else None
        if self._pool is not None:
            log.debug("decode: %d search processes for %s", self.jobs, ", ".join(searchers))

    def submit(self, tasks: Sequence[SearchTask]) -> Pending:
        """Start searching ``tasks``; their hypotheses come from the returned :class:`Pending`."""
        for name, *_ in tasks:
            if name not in self.searchers:
                raise KeyError(f"no searcher {name!r} in this pool ({', '.join(self.searchers)})")
        if self._pool is None or not tasks:
            return Pending(tasks, self.searchers)
        return Pending(tasks, self.searchers, self._pool.map_async(run_task, tasks, chunksize=1))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool.join()
            self._pool = None

    def terminate(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def __enter__(self) -> SearchPool:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.terminate()
