"""Frame-window datasets over the shards: ``(26, 40)`` windows, the label of the 21st frame.

A DNN input at frame ``t`` is the window of frames ``t-20 .. t+5`` (``left=20``, ``right=5``);
its label is the HMM state of frame ``t``, which sits at row ``left`` of the window. At an
utterance's edges the first/last frame is repeated. Windows are never stored: every utterance is
kept once, padded by ``left + right`` frames, and a batch gathers its windows by index
(``frames[start[:, None] + arange(26)]``).

Two datasets yield the same ``(x float32 (B, 26, 40), y int64 (B,))`` batches:

* :class:`FrameWindowDataset` streams the shards (an ``IterableDataset``; use
  ``DataLoader(ds, batch_size=None, num_workers=ds.num_workers)``);
* :class:`InMemoryWindows` loads a split once (small corpora, evaluation); no worker processes.

With ``target_urls`` (one targets shard per feature shard, :mod:`asr_kd.data.targets`), both read
the stored soft targets beside the features and add them to every batch: ``(x, y, soft_idx
(B, nT, k) int64, soft_prob (B, nT, k) float32)``, the targets of each window's centre frame for
the nT stored temperatures; shuffling, workers and DDP parts are unchanged.

The datasets yield tuples; their :attr:`columns` name the elements (``x``, ``y``, then ``ids``
or ``topk_ids``, ``topk_p``), and :func:`named_batch` makes the dict batch the training code
reads (``asr_kd.data.datamodule`` applies it in its loaders), e.g. ``{"x": (B, 26, 40), "y": (B,),
"topk_ids": (B, nT, k), "topk_p": (B, nT, k)}``.

Splitting an epoch (:func:`plan_epoch`, the same on every rank and worker): the training
utterances (optionally a fixed subset chosen by ``subset_seed``) are taken in shard order (the
shard order permuted per ``(seed, epoch)`` when shuffling) and dealt, greedily by frame count, to
``world_size x num_workers`` parts. Part ``rank * num_workers + worker`` is read by that worker
of that rank, so every frame is in exactly one part. Inside a part, frames are shuffled in blocks
of ``shuffle_buffer_utts`` utterances (all frames of the block permuted); a part's last partial
batch is kept (or dropped with ``drop_last``).

Uneven counts: parts differ by at most about one utterance's frames, so ranks may differ by a
batch or so (a part may even be empty when there are fewer utterances than parts: it yields
nothing). DDP needs the same number of batches on every rank: ``equal_batches_per_rank=True``
gives every part the same number of batches: with ``drop_last=False`` each part is padded with
windows re-drawn from its own frames up to the largest part's batch count (every batch full);
with ``drop_last=True`` each part stops at the smallest part's number of full batches. What is
padded or dropped is counted in :meth:`FrameWindowDataset.epoch_plan` (``padded``/``dropped``).

Epochs: call ``set_epoch(epoch)`` before each epoch (the worker copies are made when the
DataLoader iterator is created, so do not use ``persistent_workers=True``).
"""

from __future__ import annotations

import copy
import functools
import heapq
import logging
import math
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from asr_kd.data.compact import COMPACT_COLUMNS, CompactBatches, new_token, per_window
from asr_kd.data.shards import UttRecord, iter_shard, sample_key
from asr_kd.data.targets import aligned_targets
from asr_kd.fileio import read_json
from asr_kd.parallel import rank_and_world
from asr_kd.files import SHARD_INDEX
from asr_kd.errors import InputError

log = logging.getLogger(__name__)

BASE_COLUMNS = ("x", "y")
ID_COLUMNS = ("ids",)  # (B,) int64 window ids (a cache of per-window targets)
STORED_COLUMNS = ("topk_ids", "topk_p")  # (B, nT, k) int64 state ids, (B, nT, k) float32 p_ens(T)


def named_batch(columns: Sequence[str],
                batch: Sequence[torch.Tensor] | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A tuple batch as the dict of its ``columns`` (a dict batch as it is)."""
    if isinstance(batch, dict):
        return batch
    if len(batch) != len(columns):
        raise ValueError(f"a batch of {len(batch)} tensors for the columns {tuple(columns)}")
    return dict(zip(columns, batch))


def utterance_windows(feats: torch.Tensor, left: int = 20, right: int = 5) -> torch.Tensor:
    """All windows of one utterance as a strided view: (T, D) -> (T, left + 1 + right, D)."""
    padded = pad_edges(feats, left, right)  # (T + left + right, D)
    return padded.unfold(0, left + 1 + right, 1).transpose(1, 2)  # (T, L+1+R, D)


def pad_edges(feats: torch.Tensor, left: int, right: int) -> torch.Tensor:
    """Repeat the first frame ``left`` times and the last ``right`` times: (T, D) -> (T+L+R, D)."""
    if feats.shape[0] == 0:
        raise ValueError("cannot window an utterance of zero frames")
    first = feats[:1].expand(left, -1)  # (L, D)
    last = feats[-1:].expand(right, -1)  # (R, D)
    return torch.cat([first, feats, last], dim=0)


# ---------------------------------------------------------------------------------------------
# The utterance table and the epoch plan
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class UttTable:
    """The utterances the dataset serves, in shard order: shard number, key, frames."""

    urls: tuple[str, ...]
    shard: np.ndarray  # (N,) int64
    keys: tuple[str, ...]
    frames: np.ndarray  # (N,) int64

    def __len__(self) -> int:
        return len(self.keys)

    def select(self, positions: np.ndarray) -> UttTable:
        return UttTable(self.urls, self.shard[positions], tuple(self.keys[i] for i in positions),
                        self.frames[positions])


def utterance_table(urls: Sequence[str]) -> UttTable:
    """The utterances of ``urls`` from the ``index.json`` beside them (or by scanning the tars)."""
    by_file: dict[str, dict[str, Any]] = {}
    for d in {str(Path(u).resolve().parent) for u in urls}:
        index = Path(d) / SHARD_INDEX
        if index.exists():
            for s in read_json(index)["shards"]:
                by_file[str(Path(d) / s["file"])] = s
    shard, keys, frames = [], [], []
    for i, url in enumerate(urls):
        entry = by_file.get(str(Path(url).resolve()))
        utts = entry["utts"] if entry else _scan_shard(url)
        for utt_id, n in utts:
            shard.append(i)
            keys.append(sample_key(utt_id))
            frames.append(int(n))
    return UttTable(tuple(urls), np.asarray(shard, dtype=np.int64), tuple(keys), np.asarray(frames, dtype=np.int64))


def _scan_shard(url: str) -> list[tuple[str, int]]:
    log.info("%s is not in an index.json; scanning it", url)
    return [(r.id, r.feats.shape[0]) for r in iter_shard(url, float32=False)]


SUBSET_UNITS = ("utterances", "frames")


def frame_subset_mask(key: str, num_frames: int, fraction: float, seed: int) -> np.ndarray:
    """(T,) bool: which windows of utterance ``key`` a ``fraction``-of-frames subset keeps.

    Each window is kept with probability ``fraction``, drawn from ``(seed, crc32(key))``: the
    same windows on every rank, worker and epoch, whatever order the utterances are read in.
    """
    rng = np.random.default_rng([seed, zlib.crc32(key.encode("utf-8"))])
    return rng.random(num_frames) < fraction


def subset_positions(num_utts: int, fraction: float, seed: int) -> np.ndarray:
    """Sorted positions of ``round(fraction * num_utts)`` (at least 1) utterances chosen by ``seed``."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"subset_fraction must be in (0, 1], got {fraction}")
    if fraction == 1.0:
        return np.arange(num_utts)
    k = max(1, round(fraction * num_utts))
    return np.sort(np.random.default_rng(seed).permutation(num_utts)[:k])


@dataclass(frozen=True)
class EpochPlan:
    """Which utterances each part (``rank * num_workers + worker``) reads, and its batch count."""

    parts: tuple[tuple[int, ...], ...]  # positions into the table, in reading order
    frames: tuple[int, ...]  # real frames per part
    batches: tuple[int, ...]  # batches per part
    padded: tuple[int, ...]  # windows repeated to fill batches (equal_batches_per_rank, no drop_last)
    dropped: tuple[int, ...]  # frames not served (drop_last)

    def rank_batches(self, rank: int, num_workers: int) -> int:
        return sum(self.batches[rank * num_workers : (rank + 1) * num_workers])

    def rank_frames(self, rank: int, num_workers: int) -> int:
        return sum(self.frames[rank * num_workers : (rank + 1) * num_workers])


def plan_epoch(table: UttTable, num_parts: int, batch_size: int, *, shuffle: bool, seed: int, epoch: int,
               drop_last: bool, equal_batches: bool) -> EpochPlan:
    """Deal the utterances to ``num_parts`` parts (greedy by frames) and count each part's batches."""
    shard_order = np.arange(len(table.urls))
    if shuffle:
        shard_order = np.random.default_rng([seed, epoch]).permutation(len(table.urls))
    rank_of_shard = np.empty_like(shard_order)
    rank_of_shard[shard_order] = np.arange(len(shard_order))
    order = np.argsort(rank_of_shard[table.shard], kind="stable")  # shard-permuted reading order
    heap = [(0, p) for p in range(num_parts)]
    parts: list[list[int]] = [[] for _ in range(num_parts)]
    for pos in order:
        n, p = heapq.heappop(heap)
        parts[p].append(int(pos))
        heapq.heappush(heap, (n + int(table.frames[pos]), p))
    frames = [int(table.frames[ps].sum()) for ps in parts]
    if drop_last:
        batches = [n // batch_size for n in frames]
        if equal_batches:
            batches = [min(batches)] * num_parts
        padded = [0] * num_parts
        dropped = [n - b * batch_size for n, b in zip(frames, batches)]
    else:
        batches = [math.ceil(n / batch_size) for n in frames]
        if equal_batches:
            if min(frames) == 0:
                raise ValueError(f"{len(table)} utterances cannot fill {num_parts} ranks x workers, so equal "
                                 "batches per rank cannot be padded; use fewer workers/ranks or more data")
            batches = [max(batches)] * num_parts
            padded = [b * batch_size - n for n, b in zip(frames, batches)]
        else:
            padded = [0] * num_parts
        dropped = [0] * num_parts
    return EpochPlan(tuple(tuple(p) for p in parts), tuple(frames), tuple(batches), tuple(padded), tuple(dropped))


# ---------------------------------------------------------------------------------------------
# Batching
# ---------------------------------------------------------------------------------------------
@dataclass
class FrameBlock:
    """Padded frames of some utterances and the (possibly shuffled) windows to serve from them."""

    frames: torch.Tensor  # (sum(T_i + L + R), D) storage dtype
    starts: torch.Tensor  # (n,) int64: row of each window's first frame in ``frames``
    labels: torch.Tensor  # (n,) int64
    ids: torch.Tensor | None = None  # (n,) int64 window index in the dataset's fixed order (target caches)
    # Stored soft targets of each window's centre frame: ids (n, nT, k) int16/int32, probs (n, nT, k) float16
    soft: tuple[torch.Tensor, torch.Tensor] | None = None

    def take(self, idx: torch.Tensor, ids: torch.Tensor | None = None) -> FrameBlock:
        """The block serving windows ``idx`` only (ids: the window ids to carry, if any)."""
        soft = None if self.soft is None else (self.soft[0][idx], self.soft[1][idx])
        return FrameBlock(self.frames, self.starts[idx], self.labels[idx], ids, soft)

    def column(self, c: int | None) -> FrameBlock:
        """The block with only temperature ``c`` of its stored targets, (n, k) (None: all of them)."""
        if c is None or self.soft is None:
            return self
        return FrameBlock(self.frames, self.starts, self.labels, self.ids, (self.soft[0][:, c], self.soft[1][:, c]))


def make_block(records: Sequence[UttRecord], left: int, right: int, require_labels: bool = True,
               dtype: torch.dtype | None = None,
               keep: Callable[[str, int], np.ndarray] | None = None) -> FrameBlock:
    """Concatenate the records' padded frames (cast to ``dtype`` if given); one window per frame,
    or per frame that ``keep(key, T)`` marks (a frame subset; the context frames stay whole)."""
    padded, starts, labels, soft, offset = [], [], [], [], 0
    for r in records:
        feats = torch.from_numpy(r.feats)  # (T, D)
        t = feats.shape[0]
        padded.append(pad_edges(feats, left, right))  # (T + L + R, D)
        if r.labels is None:
            if require_labels:
                raise ValueError(f"utterance {r.id} has no labels; the split's shards were written "
                                 "without alignments (run the align stage, then the shards stage)")
            lab = torch.full((t,), -1, dtype=torch.int64)
        else:
            lab = torch.from_numpy(r.labels)
        start = torch.arange(offset, offset + t)  # window of frame j starts at padded row j
        if keep is not None:
            mask = torch.from_numpy(keep(sample_key(r.id), t))  # (T,) bool
            start, lab = start[mask], lab[mask]
        if r.targets is not None:
            # (nT, T, k) -> (T, nT, k): one row per window, as starts and labels
            t_idx, t_prob = (torch.from_numpy(np.ascontiguousarray(a.transpose(1, 0, 2))) for a in r.targets)
            soft.append((t_idx, t_prob) if keep is None else (t_idx[mask], t_prob[mask]))
        starts.append(start)
        labels.append(lab)
        offset += t + left + right
    frames = torch.cat(padded)  # (sum(T_i + L + R), D)
    if soft and len(soft) != len(records):
        raise ValueError("some records carry stored targets and some do not")
    targets = (torch.cat([a for a, _ in soft]), torch.cat([b for _, b in soft])) if soft else None
    return FrameBlock(frames if dtype is None else frames.to(dtype), torch.cat(starts), torch.cat(labels),
                      soft=targets)


def gather_windows(block: FrameBlock, idx: torch.Tensor, width: int) -> tuple[torch.Tensor, ...]:
    """Windows ``idx`` (positions into ``block.starts``) -> (B, width, D) float32, (B,) int64
    [, (B,) int64 window ids when the block carries them]
    [, stored targets (B, nT, k) int64 state ids, (B, nT, k) float32 probabilities when it carries those]."""
    rows = block.starts[idx][:, None] + torch.arange(width)  # (B, width)
    out: tuple[torch.Tensor, ...] = (block.frames[rows].float(), block.labels[idx])  # (B, width, D), (B,)
    if block.ids is not None:
        out = (*out, block.ids[idx])
    if block.soft is not None:
        out = (*out, block.soft[0][idx].long(), block.soft[1][idx].float())
    return out


def batch_stream(blocks: Iterator[FrameBlock], batch_size: int, width: int, num_batches: int, pad: bool,
                 rng: np.random.Generator,
                 emit: Callable[[list[tuple[FrameBlock, torch.Tensor]]], tuple[torch.Tensor, ...]] | None = None,
                 ) -> Iterator[tuple[torch.Tensor, ...]]:
    """Cut the blocks' windows into ``num_batches`` batches (the last may be partial unless ``pad``).

    With ``pad``, the last partial batch and any missing batches are filled with windows drawn
    at random from the last block (the plan counted them as ``padded``). ``emit`` makes a batch of
    its pieces, ``(block, positions)`` pairs: by default the materialised windows
    (:func:`gather_windows`), or a compact batch (:class:`asr_kd.data.compact.CompactBatches`).
    """
    if emit is None:
        emit = functools.partial(_materialise, width=width)
    pending: list[tuple[FrameBlock, torch.Tensor]] = []
    have, count, last = 0, 0, None
    for block in blocks:
        if count == num_batches:
            break  # drop_last: the rest of the part is dropped (counted in the plan)
        last, pos, n = block, 0, block.starts.shape[0]
        while pos < n and count < num_batches:
            take = min(batch_size - have, n - pos)
            pending.append((block, torch.arange(pos, pos + take)))
            pos, have = pos + take, have + take
            if have == batch_size:
                yield emit(pending)
                pending, have, count = [], 0, count + 1
    if count < num_batches and have and not pad:
        yield emit(pending)
        return
    while count < num_batches and last is not None:
        need = torch.from_numpy(rng.integers(0, last.starts.shape[0], size=batch_size - have))
        pending.append((last, need))
        yield emit(pending)
        pending, have, count = [], 0, count + 1


def _materialise(pieces: list[tuple[FrameBlock, torch.Tensor]], width: int) -> tuple[torch.Tensor, ...]:
    return _cat([gather_windows(block, idx, width) for block, idx in pieces])


def _cat(parts: list[tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor, ...]:
    if len(parts) == 1:
        return parts[0]
    return tuple(torch.cat(column) for column in zip(*parts))


def shuffled(block: FrameBlock, rng: np.random.Generator) -> FrameBlock:
    perm = torch.from_numpy(rng.permutation(block.starts.shape[0]))
    return block.take(perm, None if block.ids is None else block.ids[perm])


# ---------------------------------------------------------------------------------------------
# The datasets
# ---------------------------------------------------------------------------------------------
class _WindowsBase:
    """What both datasets share: the table, the subset, the epoch plan and the counts."""

    def __init__(self, urls: list[str], *, left: int, right: int, batch_size: int, shuffle: bool,
                 shuffle_buffer_utts: int, seed: int, subset_fraction: float, subset_seed: int,
                 drop_last: bool, equal_batches_per_rank: bool, num_workers: int,
                 rank: int | None, world_size: int | None, subset_unit: str = "utterances",
                 target_urls: Sequence[str] | None = None) -> None:
        if not urls:
            raise InputError("no shards given; run the shards stage or check the index")
        if batch_size < 1 or shuffle_buffer_utts < 1 or left < 0 or right < 0 or num_workers < 0:
            raise ValueError("batch_size and shuffle_buffer_utts must be >= 1; left, right, num_workers >= 0")
        self.left, self.right, self.batch_size = left, right, batch_size
        self.shuffle, self.shuffle_buffer_utts, self.seed = shuffle, shuffle_buffer_utts, seed
        self.drop_last, self.equal_batches_per_rank = drop_last, equal_batches_per_rank
        self.num_workers = num_workers
        self._rank, self._world = rank, world_size
        if target_urls is not None and len(target_urls) != len(urls):
            raise ValueError(f"{len(target_urls)} targets shards for {len(urls)} feature shards")
        self.target_urls = None if target_urls is None else [str(u) for u in target_urls]
        if subset_unit not in SUBSET_UNITS:
            raise ValueError(f"subset_unit must be one of {SUBSET_UNITS}, got {subset_unit!r}")
        full = utterance_table(urls)
        self.total_utterances = len(full)
        self.subset_fraction, self.subset_seed = subset_fraction, subset_seed
        self.frame_subset = subset_unit == "frames" and subset_fraction < 1.0
        if self.frame_subset:
            # Every utterance, a fraction of its windows: the table counts the kept windows.
            kept = np.asarray([int(self._frame_mask(k, int(n)).sum()) for k, n in zip(full.keys, full.frames)],
                              dtype=np.int64)
            full = UttTable(full.urls, full.shard, full.keys, kept)
            self.subset = np.flatnonzero(kept > 0)
        else:
            self.subset = subset_positions(len(full), subset_fraction, subset_seed)
        self.table = full.select(self.subset)
        self.epoch = 0
        self.compact, self.stored_column = False, None

    def compact_view(self, stored_column: int | None = None) -> Any:
        """A view of this dataset (same data, same batches) that yields compact batches
        (:mod:`asr_kd.data.compact`): block frames and window starts, spliced into windows on the
        training device. ``stored_column``: of the stored targets, only this temperature's column
        travels, as (B, k) (None: all, (B, nT, k))."""
        view = copy.copy(self)
        view.compact, view.stored_column = True, stored_column
        return view

    def _emitter(self, token: int | None = None) -> Callable[..., tuple[torch.Tensor, ...]] | None:
        """How batch_stream makes batches: materialised (None) or compact."""
        return CompactBatches(self.window, token, self.stored_column) if self.compact else None

    def _read_shard(self, s: int, keys: set[str]) -> Iterator[UttRecord]:
        """Utterances ``keys`` of shard ``s`` in stored order, with their stored targets if any."""
        records = iter_shard(self.table.urls[s], keys, float32=False)
        if self.target_urls is None:
            return records
        return aligned_targets(records, self.target_urls[s], keys)

    def _frame_mask(self, key: str, num_frames: int) -> np.ndarray:
        return frame_subset_mask(key, num_frames, self.subset_fraction, self.subset_seed)

    @property
    def keep(self) -> Callable[[str, int], np.ndarray] | None:
        """The window filter of a frame subset (``make_block(keep=...)``), None for whole utterances."""
        return self._frame_mask if self.frame_subset else None

    @property
    def window(self) -> int:
        return self.left + 1 + self.right

    @property
    def columns(self) -> tuple[str, ...]:
        """The names of a batch's tensors, in order (:func:`named_batch`)."""
        ids = ID_COLUMNS if getattr(self, "return_ids", False) else ()
        base = COMPACT_COLUMNS if self.compact else BASE_COLUMNS
        return base + ids + (STORED_COLUMNS if self.target_urls is not None else ())

    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch``'s shuffle (deterministic for ``(seed, epoch)``)."""
        self.epoch = int(epoch)

    def rank_world(self) -> tuple[int, int]:
        return rank_and_world(self._rank, self._world)

    def _workers(self) -> int:
        return max(1, self.num_workers)

    def epoch_plan(self, epoch: int | None = None) -> EpochPlan:
        """The split of ``epoch`` (default: the current one) over ranks x workers, with counts."""
        _, world = self.rank_world()
        return plan_epoch(self.table, world * self._workers(), self.batch_size, shuffle=self.shuffle,
                          seed=self.seed, epoch=self.epoch if epoch is None else epoch,
                          drop_last=self.drop_last, equal_batches=self.equal_batches_per_rank)

    @property
    def num_frames(self) -> int:
        """Real frames (= windows) this rank serves in the current epoch."""
        rank, _ = self.rank_world()
        return self.epoch_plan().rank_frames(rank, self._workers())

    @property
    def num_windows(self) -> int:
        return self.num_frames

    @property
    def total_frames(self) -> int:
        """Frames of the (subset of the) split over all ranks."""
        return int(self.table.frames.sum())

    @property
    def num_batches(self) -> int:
        """Batches this rank yields in the current epoch."""
        rank, _ = self.rank_world()
        return self.epoch_plan().rank_batches(rank, self._workers())

    def __len__(self) -> int:
        return self.num_batches

    def __getstate__(self) -> dict[str, Any]:
        # Worker processes get a pickled copy: fix the rank there as the main process sees it.
        state = self.__dict__.copy()
        state["_rank"], state["_world"] = self.rank_world()
        return state


class FrameWindowDataset(_WindowsBase, IterableDataset):
    """Streams ``(x (B, L+1+R, D) float32, y (B,) int64)`` batches from webdataset shards.

    ``num_workers`` must equal the DataLoader's ``num_workers`` (it fixes the split into parts
    and so the batch count, ``len(ds)``, before any worker starts). ``rank``/``world_size``
    override torch.distributed / the RANK and WORLD_SIZE environment (for tests and tools).
    """

    def __init__(self, urls: list[str], *, left: int = 20, right: int = 5, batch_size: int = 256,
                 shuffle: bool = True, shuffle_buffer_utts: int = 200, seed: int = 0,
                 subset_fraction: float = 1.0, subset_seed: int = 0, drop_last: bool = False,
                 equal_batches_per_rank: bool = False, num_workers: int = 0,
                 rank: int | None = None, world_size: int | None = None, subset_unit: str = "utterances",
                 target_urls: Sequence[str] | None = None) -> None:
        super().__init__(urls, left=left, right=right, batch_size=batch_size, shuffle=shuffle,
                         shuffle_buffer_utts=shuffle_buffer_utts, seed=seed, subset_fraction=subset_fraction,
                         subset_seed=subset_seed, drop_last=drop_last,
                         equal_batches_per_rank=equal_batches_per_rank, num_workers=num_workers,
                         rank=rank, world_size=world_size, subset_unit=subset_unit, target_urls=target_urls)

    def _part(self) -> int:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if workers != self._workers():
            raise ValueError(f"FrameWindowDataset(num_workers={self.num_workers}) is read by a DataLoader "
                             f"with {workers} worker(s); pass the same num_workers to both")
        rank, _ = self.rank_world()
        return rank * workers + worker

    def _records(self, positions: Sequence[int]) -> Iterator[UttRecord]:
        """The part's utterances in reading order (shard by shard, skipping the others' samples)."""
        by_shard: dict[int, set[str]] = {}
        shard_order: list[int] = []
        for pos in positions:
            s = int(self.table.shard[pos])
            if s not in by_shard:
                by_shard[s] = set()
                shard_order.append(s)
            by_shard[s].add(self.table.keys[pos])
        for s in shard_order:
            yield from self._read_shard(s, by_shard[s])

    def _blocks(self, records: Iterator[UttRecord], rng: np.random.Generator) -> Iterator[FrameBlock]:
        buf: list[UttRecord] = []
        for rec in records:
            buf.append(rec)
            if len(buf) == self.shuffle_buffer_utts:
                yield self._block(buf, rng)
                buf = []
        if buf:
            yield self._block(buf, rng)

    def _block(self, records: list[UttRecord], rng: np.random.Generator) -> FrameBlock:
        # Materialised batches gather float32 rows (faster than gathering float16 and casting);
        # compact ones keep the storage dtype (float16), what travels to the device.
        block = make_block(records, self.left, self.right, dtype=None if self.compact else torch.float32,
                           keep=self.keep)
        if self.compact:
            block = block.column(self.stored_column)
        return shuffled(block, rng) if self.shuffle else block

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        part = self._part()
        plan = self.epoch_plan()
        rng = np.random.default_rng([self.seed, self.epoch, part])
        blocks = self._blocks(self._records(plan.parts[part]), rng)
        pad = self.equal_batches_per_rank and not self.drop_last
        yield from batch_stream(blocks, self.batch_size, self.window, plan.batches[part], pad, rng, self._emitter())


class InMemoryWindows(_WindowsBase, IterableDataset):
    """The same batches as :class:`FrameWindowDataset`, from a split loaded once into memory.

    Holds one tensor of all utterances' padded frames (storage dtype, ``(sum(T+L+R), D)``) and
    one label tensor; iterate it directly or through ``DataLoader(ds, batch_size=None)`` with
    ``num_workers=0``. With ``shuffle=False`` it yields
    exactly the batches of a ``FrameWindowDataset`` with ``num_workers=0``; with ``shuffle=True``
    it shuffles all of a rank's frames at once instead of in blocks. Training under DDP, the ranks
    slice one-process batches instead (:attr:`shares_global_batches`).

    ``return_ids=True`` adds a third element to each batch: the (B,) window ids, positions in the
    dataset's fixed order (``ordered_windows``), so that per-window values computed once (the
    ensemble's soft targets, ``asr_kd.nn.ensemble.cache_targets``) can be looked up per batch.
    """

    def __init__(self, urls: list[str], *, left: int = 20, right: int = 5, batch_size: int = 256,
                 shuffle: bool = True, shuffle_buffer_utts: int = 200, seed: int = 0,
                 subset_fraction: float = 1.0, subset_seed: int = 0, drop_last: bool = False,
                 equal_batches_per_rank: bool = False, rank: int | None = None,
                 world_size: int | None = None, return_ids: bool = False, subset_unit: str = "utterances",
                 target_urls: Sequence[str] | None = None) -> None:
        self.return_ids = return_ids
        super().__init__(urls, left=left, right=right, batch_size=batch_size, shuffle=shuffle,
                         shuffle_buffer_utts=shuffle_buffer_utts, seed=seed, subset_fraction=subset_fraction,
                         subset_seed=subset_seed, drop_last=drop_last,
                         equal_batches_per_rank=equal_batches_per_rank, num_workers=0,
                         rank=rank, world_size=world_size, subset_unit=subset_unit, target_urls=target_urls)
        self.block = self._load()
        self._token = new_token()  # the key of self.block's frames on a training device (compact batches)
        # Row of each table utterance's first window start in self.block.starts.
        self.first_window = np.concatenate([[0], np.cumsum(self.table.frames)[:-1]]).astype(np.int64)

    @property
    def num_ordered_windows(self) -> int:
        """Windows of the whole dataset (all ranks), the length of a target cache."""
        return int(self.block.starts.shape[0])

    def ordered_windows(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """All windows in id order, unshuffled, on every rank: ``(ids (B,), x (B, 26, 40))``."""
        n = self.num_ordered_windows
        for pos in range(0, n, batch_size):
            idx = torch.arange(pos, min(pos + batch_size, n))
            x, _ = gather_windows(FrameBlock(self.block.frames, self.block.starts, self.block.labels), idx,
                                  self.window)
            yield idx, x

    def _load(self) -> FrameBlock:
        wanted: dict[int, set[str]] = {}
        for s, k in zip(self.table.shard, self.table.keys):
            wanted.setdefault(int(s), set()).add(k)
        records: dict[str, UttRecord] = {}
        for s, keys in wanted.items():
            for rec in self._read_shard(s, keys):
                records[sample_key(rec.id)] = rec
        missing = [k for k in self.table.keys if k not in records]
        if missing:
            raise InputError(f"utterances listed in the index are missing from the shards: {missing[:5]}; "
                             "re-run the shards stage")
        return make_block([records[k] for k in self.table.keys], self.left, self.right, keep=self.keep)

    @property
    def shares_global_batches(self) -> bool:
        """Training under DDP (several ranks, every batch padded full): every rank holds the whole
        split, so the ranks cut one stream of ``world x batch_size`` batches (the stream one process
        with that batch size reads) into slices of ``batch_size``, rank r the r-th. Their averaged
        gradients are then those of the one-process batch: ``w`` ranks with ``batch_size = b``
        train as one process with ``b * w``, up to float rounding."""
        _, world = self.rank_world()
        return world > 1 and self.equal_batches_per_rank and not self.drop_last

    def _global_plan(self) -> EpochPlan:
        _, world = self.rank_world()
        return plan_epoch(self.table, 1, self.batch_size * world, shuffle=self.shuffle, seed=self.seed,
                          epoch=self.epoch, drop_last=False, equal_batches=True)

    @property
    def num_frames(self) -> int:
        if self.shares_global_batches:
            rank, world = self.rank_world()
            return len(range(rank, self.total_frames, world))  # about an equal share of the real frames
        return super().num_frames

    @property
    def num_batches(self) -> int:
        return self._global_plan().batches[0] if self.shares_global_batches else super().num_batches

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if get_worker_info() is not None:
            raise ValueError("InMemoryWindows is served from the main process: use a DataLoader with num_workers=0")
        rank, world = self.rank_world()
        if self.shares_global_batches:
            plan, part, batch = self._global_plan(), 0, self.batch_size * world
        else:
            plan, part, batch = self.epoch_plan(), rank, self.batch_size
        rng = np.random.default_rng([self.seed, self.epoch, part])
        positions = plan.parts[part]
        idx = torch.cat([torch.arange(self.first_window[p], self.first_window[p] + self.table.frames[p])
                         for p in positions] or [torch.zeros(0, dtype=torch.int64)])  # (frames of this part,)
        whole = self.block.column(self.stored_column) if self.compact else self.block
        view = whole.take(idx, idx if self.return_ids else None)
        if self.shuffle:
            view = shuffled(view, rng)
        pad = self.equal_batches_per_rank and not self.drop_last
        batches = batch_stream(iter([view]), batch, self.window, plan.batches[part], pad, rng,
                               self._emitter(self._token))
        if batch == self.batch_size:
            yield from batches
            return
        lo, hi = rank * self.batch_size, (rank + 1) * self.batch_size
        sliced = [per_window(name) for name in self.columns]
        for b in batches:
            yield tuple(t[lo:hi] if cut else t for t, cut in zip(b, sliced))
