"""The Lightning data module for frame-window training, and a resumable data loader.

``FrameDataModule`` is deliberately thin: it takes ready-made datasets (built by
``shard_datamodule`` from the webdataset shards of the ``shards`` stage, or in-memory tensors in
tests) and wraps them in loaders. Two kinds of dataset are accepted:

* iterable datasets that already yield batches ``(x (B, 26, 40), y (B,))`` and have
  ``set_epoch(e)`` (``asr_kd.data.windows.FrameWindowDataset``): loaded with ``batch_size=None``;
* map-style datasets of single frames ``(x (26, 40), y ())`` (e.g. a ``TensorDataset``): batched
  here, shuffled per epoch from the seed by ``EpochShuffleSampler``, which also splits the order
  over DDP ranks.

Both kinds split their data over DDP ranks themselves, so the Trainer runs with
``use_distributed_sampler=False``. Every loader yields dict batches (``{"x": ..., "y": ...}``
plus what the training set carries: ``asr_kd.data.windows.named_batch``), the tensors named by
the dataset's ``columns`` (``("x", "y")`` for a dataset without them).

The training and validation loaders that Lightning drives serve *compact* batches where the
dataset can (``asr_kd.data.compact``): the frames of a block travel once (float16), each batch
only its windows' start rows, labels and the student's temperature of the stored targets
(``stored_column``, set by the distillation system at fit start); the data module's
``transfer_batch_to_device`` hook puts them on the training device (the frames of an in-memory
training set once per fit) and ``on_after_batch_transfer`` gathers the windows there, so the
LightningModule sees the same dict batches as from a materialised loader, value for value.
``eval_loader`` (read outside Lightning) serves materialised batches.

``ResumableLoader`` makes a killed run continue exactly where its last checkpoint was taken:
Lightning stores its ``state_dict`` (epoch and batches already trained on) in every checkpoint,
and on restore the loader re-creates that epoch's order and skips the batches already seen.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence, Sized
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler, default_collate

from asr_kd.config import ModelConfig, TrainConfig
from asr_kd.data.compact import WindowSplicer, is_compact, splice_windows
from asr_kd.data.windows import BASE_COLUMNS, named_batch
from asr_kd.parallel import process_group

log = logging.getLogger(__name__)


def _collate_named(columns: Sequence[str], samples: list[Any]) -> dict[str, torch.Tensor]:
    return named_batch(columns, default_collate(samples))


def batch_collate(ds: Dataset, batched: bool) -> Callable[[Any], dict[str, torch.Tensor]]:
    """The collate function of a loader over ``ds``: its batches (``batched``: a dataset that yields
    whole batches) or its collated samples, as dicts named by ``ds.columns``."""
    columns = tuple(getattr(ds, "columns", BASE_COLUMNS))
    return functools.partial(named_batch if batched else _collate_named, columns)


class EpochShuffleSampler(Sampler[int]):
    """A permutation of range(n) drawn from (seed, epoch), this rank's share of it under DDP.

    Rank r of w takes positions r, r + w, ... of the epoch's order, so a batch of b on each of w
    ranks is exactly a batch of w * b in one process. ``pad`` (training) repeats the first indices
    so every rank has the same count; without it (evaluation) ranks may differ by one.
    Lightning calls ``set_epoch`` each epoch.
    """

    def __init__(self, n: int, seed: int, shuffle: bool = True, distributed: bool = True, pad: bool = True) -> None:
        self.n = n
        self.seed = seed
        self.shuffle = shuffle
        self.distributed = distributed
        self.pad = pad
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _rank_world(self) -> tuple[int, int]:
        return (process_group() if self.distributed else None) or (0, 1)

    def __iter__(self) -> Iterator[int]:
        order = list(range(self.n))
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.n, generator=gen).tolist()
        rank, world = self._rank_world()
        if self.pad and self.n % world:
            order += order[: world - self.n % world]
        return iter(order[rank::world])

    def __len__(self) -> int:
        rank, world = self._rank_world()
        if self.pad:
            return math.ceil(self.n / world)
        return len(range(rank, self.n, world))


class ResumableLoader(DataLoader):
    """A DataLoader whose position (epoch, batches trained on) is saved in Lightning checkpoints.

    ``progress`` returns how many batches of the current epoch the trainer has processed; it is
    read when a checkpoint is written. Each ``__iter__`` starts the next epoch; for an iterable
    dataset with ``set_epoch`` the loader sets that epoch itself (Lightning only tells samplers).
    """

    def __init__(self, *args: Any, progress: Callable[[], int] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._progress = progress
        self._next_epoch = 0
        self._epoch = 0
        self._skip = 0
        self._finished = False

    def __iter__(self) -> Iterator[Any]:
        self._epoch = self._next_epoch
        self._next_epoch += 1
        self._finished = False
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self._epoch)
        sampler = self.batch_sampler.sampler if self.batch_sampler is not None else self.sampler
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(self._epoch)
        skip, self._skip = self._skip, 0
        return self._iterate(skip)

    def _iterate(self, skip: int) -> Iterator[Any]:
        it = super().__iter__()
        if skip:
            log.info("resuming epoch %d after %d batches already trained on", self._epoch, skip)
        for n, batch in enumerate(it):
            if n >= skip:
                yield batch
        self._finished = True

    def state_dict(self) -> dict[str, int | bool]:
        done = self._progress() if self._progress is not None else 0
        return {"epoch": self._epoch, "batches_done": int(done), "finished": self._finished}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("finished", False):
            self._next_epoch, self._skip = int(state["epoch"]) + 1, 0
        else:
            self._next_epoch, self._skip = int(state["epoch"]), int(state["batches_done"])


class FrameDataModule(L.LightningDataModule):
    """Train / dev / test window loaders over given datasets (see module docstring)."""

    def __init__(
        self,
        train: Dataset,
        dev: Dataset,
        test: Dataset | None = None,
        *,
        batch_size: int = 256,
        seed: int = 0,
        num_workers: int = 0,
        eval_builder: Callable[[str], Dataset] | None = None,
        compact_batches: bool = True,
    ) -> None:
        super().__init__()
        self.train_set = train
        self.dev_set = dev
        self.test_set = test
        self.batch_size = batch_size
        self.seed = seed
        self.num_workers = num_workers
        # Rank-0-only evaluation after a DDP fit needs datasets that ignore the process group.
        self.eval_builder = eval_builder
        # The stored targets' column (temperature) the training batches carry; None: all of them.
        self.stored_column: int | None = None
        # False: Lightning's loaders serve materialised windows too (the loader before issue 34).
        self.compact_batches = compact_batches
        self.splicer = WindowSplicer()

    def _progress(self) -> int:
        trainer = self.trainer
        if trainer is None:
            return 0
        return trainer.fit_loop.epoch_loop.batch_progress.current.processed

    def _loader(self, ds: Dataset, train: bool, resumable: bool = False, distributed: bool = True,
                compact: bool = False) -> DataLoader:
        if compact and hasattr(ds, "compact_view"):
            ds = ds.compact_view(self.stored_column if train else None)
        cls = ResumableLoader if resumable else DataLoader
        extra: dict[str, Any] = {"progress": self._progress} if resumable else {}
        common = dict(num_workers=self.num_workers, persistent_workers=False, **extra)
        if isinstance(ds, IterableDataset):
            return cls(ds, batch_size=None, collate_fn=batch_collate(ds, batched=True), **common)
        if not isinstance(ds, Sized):
            raise TypeError(f"dataset {type(ds).__name__} is neither iterable nor sized")
        sampler = EpochShuffleSampler(len(ds), self.seed, shuffle=train, distributed=distributed, pad=train)
        return cls(ds, batch_size=self.batch_size, sampler=sampler, drop_last=False,
                   collate_fn=batch_collate(ds, batched=False), **common)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, train=True, resumable=True, compact=self.compact_batches)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.dev_set, train=False, compact=self.compact_batches)

    # -- compact batches: to the device, then spliced into windows there ------------------------------
    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        if is_compact(batch):
            return self.splicer.to_device(batch, device)
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return splice_windows(batch) if is_compact(batch) else batch

    def teardown(self, stage: str) -> None:
        self.splicer.clear()  # the frames held on the device

    def test_dataloader(self) -> DataLoader:
        if self.test_set is None:
            raise ValueError("this data module has no test set")
        return self._loader(self.test_set, train=False)

    def eval_loader(self, split: str) -> DataLoader:
        """A plain (non-shuffled) loader over 'train', 'dev' or 'test' for final evaluation."""
        ds = {"train": self.train_set, "dev": self.dev_set, "test": self.test_set}[split]
        distributed = process_group() is not None
        if distributed and self.eval_builder is not None and ds is not None:
            ds = self.eval_builder(split)
        if ds is None:
            raise ValueError(f"this data module has no {split} set")
        if isinstance(ds, IterableDataset) and hasattr(ds, "set_epoch"):
            ds.set_epoch(0)
        return self._loader(ds, train=False, distributed=False)


def shard_datamodule(
    shard_indexes: Mapping[str, str | os.PathLike],
    model: ModelConfig,
    train: TrainConfig,
    *,
    subset_fraction: float = 1.0,
    subset_seed: int = 0,
    subset_unit: str = "utterances",
    return_ids: bool = False,
    targets_dir: str | os.PathLike | None = None,
) -> FrameDataModule:
    """Train / dev / test window datasets over the shards the ``index.json`` files of
    ``shard_indexes`` (``{"train": ..., "dev": ..., "test": ...}``) list.

    Corpora with at most ``train.in_memory_max_frames`` training frames are loaded into memory
    (``InMemoryWindows``); larger ones are streamed (``FrameWindowDataset``). The training set
    (optionally a ``subset_fraction`` of its utterances, or of every utterance's windows with
    ``subset_unit="frames"``, chosen by ``subset_seed``) gives every
    DDP rank the same number of batches; dev and test are split over ranks unpadded.
    ``return_ids`` makes the in-memory training set add window ids to its batches (for a cache
    of the ensemble's soft targets); it needs the in-memory path. ``targets_dir`` (stored soft
    targets, ``asr_kd.data.targets``): the training set reads the targets shard of each training
    shard from there and adds the targets to its batches.
    """
    from asr_kd.data.shards import read_index, shard_urls
    from asr_kd.data.targets import target_shard
    from asr_kd.data.windows import FrameWindowDataset, InMemoryWindows

    urls = {split: shard_urls(shard_indexes[split]) for split in ("train", "dev", "test")}
    train_frames = read_index(shard_indexes["train"])["frames"]
    in_memory = train_frames <= train.in_memory_max_frames
    if return_ids and not in_memory:
        raise ValueError(f"cached soft targets need the in-memory training set, but the corpus has {train_frames} "
                         f"training frames > train.in_memory_max_frames={train.in_memory_max_frames}; "
                         "use the online ensemble (distill.cache_targets=false) or raise the limit")
    if return_ids and targets_dir is not None:
        raise ValueError("window ids (cached targets) and stored targets are two ways to the same targets: pick one")
    target_urls = None if targets_dir is None else [str(target_shard(targets_dir, u)) for u in urls["train"]]
    common = dict(left=model.left_context, right=model.right_context, batch_size=train.batch_size,
                  seed=train.seed, shuffle_buffer_utts=train.shuffle_buffer_utts)

    def make(split: str, *, shuffle: bool, equal: bool = False, single: bool = False) -> Dataset:
        subset = (dict(subset_fraction=subset_fraction, subset_seed=subset_seed, subset_unit=subset_unit,
                       target_urls=None if single else target_urls)
                  if split == "train" else {})
        rank_world = dict(rank=0, world_size=1) if single else {}
        if in_memory:
            ids = dict(return_ids=True) if return_ids and split == "train" and not single else {}
            return InMemoryWindows(urls[split], shuffle=shuffle, equal_batches_per_rank=equal,
                                   **common, **subset, **rank_world, **ids)
        return FrameWindowDataset(urls[split], shuffle=shuffle, equal_batches_per_rank=equal,
                                  num_workers=train.num_workers, **common, **subset, **rank_world)

    return FrameDataModule(
        make("train", shuffle=True, equal=True), make("dev", shuffle=False), make("test", shuffle=False),
        batch_size=train.batch_size, seed=train.seed, num_workers=0 if in_memory else train.num_workers,
        eval_builder=lambda split: make(split, shuffle=False, single=True),
    )
