"""Where a student's soft targets come from: one object per source, one call per batch.

A :class:`SoftTargets` source turns a training batch (the dict of :mod:`asr_kd.data.windows`:
``"x"``, ``"y"``, and ``"ids"`` or ``"topk_ids"`` / ``"topk_p"`` where the training set carries
them) into the form :func:`asr_kd.nn.losses.distillation_loss` takes:

* :class:`OnlineTargets` (``distill.targets=online``): the frozen ensemble runs on the batch's
  clean windows in every student step -> dense p_ens(T) (B, N); with ``logits=True`` its centred
  logits instead (the matching-logits limit);
* :class:`CachedTargets` (``distill.targets=cached``): dense p_ens(T) held in memory for every
  training window (``asr_kd.nn.ensemble.cache_targets``), looked up by the batch's window ids;
* :class:`StoredTargets` (``distill.targets=stored``): the top-k + tail targets read from the
  targets shards beside the feature shards, the column of the student's T.

The ensemble of an online source is kept out of the module tree (a plain attribute of a plain
object), so it is neither trained, wrapped by DDP, nor stored in checkpoints.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from asr_kd.nn.ensemble import Ensemble, ensemble_centred_logits, ensemble_probs
from asr_kd.nn.losses import SoftTargetBatch, SparseTargets, TeacherLogits, sparse_tail

Batch = dict[str, torch.Tensor]


class SoftTargets(Protocol):
    """A source of soft targets at one temperature."""

    T: float
    num_pdfs: int | None  # the targets' state count where the source knows it

    def to(self, device: torch.device | str) -> Any:
        """Put what the source computes with on ``device`` (at fit start)."""

    def targets(self, batch: Batch) -> SoftTargetBatch:
        """The batch's soft targets: dense (B, N) probabilities, :class:`SparseTargets` or :class:`TeacherLogits`."""


class OnlineTargets:
    """The frozen ensemble run on every batch (no grad): p_ens(T), or its centred logits (``logits``)."""

    def __init__(self, teacher: Ensemble, T: float, *, logits: bool = False) -> None:
        self.teacher, self.T, self.logits = teacher, T, logits
        self.num_pdfs = teacher.num_pdfs

    def to(self, device: torch.device | str) -> OnlineTargets:
        self.teacher.to(device)
        return self

    @torch.no_grad()
    def targets(self, batch: Batch) -> SoftTargetBatch:
        out = self.teacher(batch["x"])  # (K, B, N)
        if self.logits:
            return TeacherLogits(ensemble_centred_logits(out))
        return ensemble_probs(out, self.T, self.teacher.mean)  # (B, N)


class CachedTargets:
    """p_ens(T) of every training window, (num_windows, N) float16 on CPU, looked up by ``batch["ids"]``."""

    def __init__(self, cache: torch.Tensor, T: float) -> None:
        self.cache, self.T = cache, T
        self.num_pdfs = int(cache.shape[1])

    def to(self, device: torch.device | str) -> CachedTargets:
        return self  # the cache stays in CPU memory; each batch's rows go to the device

    def targets(self, batch: Batch) -> torch.Tensor:
        if "ids" not in batch:
            raise ValueError("cached targets need window ids in the batches; the training set was built without "
                             "return_ids")
        x = batch["x"]
        return self.cache[batch["ids"].cpu()].to(x.device, torch.float32)  # (B, N)


class StoredTargets:
    """Column ``column`` (the student's T) of the stored top-k + tail targets the batches carry:
    ``topk_ids``/``topk_p`` (B, nT, k), or (B, k) when the loader served this column only
    (``FrameDataModule.stored_column``, which :class:`asr_kd.nn.systems.DistillSystem` sets)."""

    def __init__(self, column: int, T: float) -> None:
        self.column, self.T = column, T
        self.num_pdfs = None

    def to(self, device: torch.device | str) -> StoredTargets:
        return self

    def targets(self, batch: Batch) -> SparseTargets:
        if "topk_ids" not in batch:
            raise ValueError("stored targets expected in the batches (topk_ids, topk_p); the training set was built "
                             "without targets_dir")
        ids, probs = batch["topk_ids"], batch["topk_p"]
        if ids.dim() == 3:
            ids, probs = ids[:, self.column], probs[:, self.column]  # (B, k)
        return SparseTargets(ids, probs, sparse_tail(probs))
