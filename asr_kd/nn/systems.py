"""Lightning systems: teacher training (one model or K stacked) and distillation from the ensemble.

The models are plain ``nn.Module`` (``asr_kd.nn.models``); a system adds the loss, the optimiser and
its learning-rate schedule, dev frame accuracy every epoch, and the run's config and per-epoch
history in every checkpoint (``checkpoint["asr_kd"]``).

Batches are dicts (:mod:`asr_kd.data.windows`): ``"x"`` (B, 26, 40), ``"y"`` (B,), and what the
training set adds for the students' soft targets (``"ids"``, ``"topk_ids"``, ``"topk_p"``).

The learning-rate schedule (``train.lr_schedule``: warm-up, then cosine, newbob or constant) is one
LR scheduler, :class:`asr_kd.nn.schedules.FrameLR`, that ``configure_optimizers`` hands to
Lightning to step after every optimiser step; Lightning saves and restores its state (the step
and the newbob state) with every checkpoint. The newbob rule reads each epoch's dev frame accuracy
at the end of validation.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from asr_kd.config import TrainConfig, to_dict
from asr_kd.data.augment import spec_augment
from asr_kd.nn.losses import distillation_loss, distillation_terms
from asr_kd.nn.models import AcousticDNN, StackedDNN
from asr_kd.nn.schedules import FrameLR, legacy_scheduler_state
from asr_kd.nn.target_sources import OnlineTargets, SoftTargets, StoredTargets

log = logging.getLogger(__name__)

MONITOR = "dev/frame_acc"


class FrameSystem(L.LightningModule):
    """Shared parts: optimiser + LR schedule, dev frame accuracy, history saved in checkpoints."""

    def __init__(
        self,
        model: nn.Module,
        optim: TrainConfig,
        *,
        steps_per_epoch: int = 0,
        max_epochs: int = 1,
        run_config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.optim = optim
        self.steps_per_epoch = steps_per_epoch
        self.max_epochs = max_epochs
        self.run_config = run_config or {}
        self.history: list[dict[str, Any]] = []  # one row per finished epoch
        self._val = torch.zeros(0)
        self._train_sums = torch.zeros(3)  # loss sum, correct frames, frames
        self._train_pending: list[tuple[torch.Tensor, torch.Tensor, int, int]] = []  # steps not yet in the sums

    # -- optimiser and schedule ------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        params = [p for p in self.model.parameters() if p.requires_grad]
        o = self.optim
        if o.optimizer == "sgd":
            opt: torch.optim.Optimizer = torch.optim.SGD(params, lr=o.lr, momentum=o.momentum,
                                                         weight_decay=o.weight_decay)
        else:
            # The fused kernel does Adam's update in one pass over each tensor: on the tiny demo's stacked
            # teachers (8.7M parameters in 8 tensors) the update is ~3x faster than the default
            # per-tensor loop, which took a fifth of a training step on CPU (benchmarks/README.md).
            fused = all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for p in params)
            opt = torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay, fused=fused)
        # The planned steps are set at train start (on_train_start): the trainer's estimate loads the
        # training data, which here, before a resumed run restores its loader state, would lose it.
        schedule = FrameLR(opt, o)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": schedule, "interval": "step", "frequency": 1}}

    def planned_steps(self) -> int:
        """Optimiser steps of the whole run (for the cosine decay); 0 if unknown."""
        if self.steps_per_epoch > 0:
            return self.steps_per_epoch * self.max_epochs
        est = self.trainer.estimated_stepping_batches if self._trainer is not None else math.inf
        return int(est) if math.isfinite(est) else 0

    def on_train_start(self) -> None:
        if self.schedule.total_steps is None:  # a new run (a resumed one restored its plan)
            self.schedule.plan(self.planned_steps())

    @property
    def schedule(self) -> FrameLR:
        """The run's LR scheduler (during fit)."""
        sched = self.lr_schedulers()
        if not isinstance(sched, FrameLR):
            raise TypeError(f"expected the FrameLR scheduler, got {type(sched).__name__}")
        return sched

    # -- what the training batches carry ----------------------------------------------------------
    @property
    def stored_column(self) -> int | None:
        """The column (temperature) of stored soft targets the training step reads; None: all."""
        return None

    def on_fit_start(self) -> None:
        # Before the loaders are made: only this column of stored targets travels with the batches.
        dm = self.trainer.datamodule
        if dm is not None and hasattr(dm, "stored_column"):
            dm.stored_column = self.stored_column

    # -- training bookkeeping ----------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        self._train_sums = torch.zeros(3, device=self.device)
        self._train_pending = []

    def _log_this_step(self) -> bool:
        """Whether the logger writes this training step's values (Lightning writes every
        ``log_every_n_steps`` optimiser steps): step-level ``self.log`` calls cost ~0.6 ms each,
        6 % of a tiny student's step on CPU, so the training steps make them on these steps only."""
        n = max(self.trainer.log_every_n_steps, 1)
        return (self.global_step + 1) % n == 0

    def _track_train(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        """Running sums (on device, no sync): loss x frames, correct frames (member mean), frames.

        ``logits``: the fp32 logits the loss read (B, N) or (K, B, N). An argmax over fp32 is ~3x
        faster on CPU than over the bf16 logits of a bf16-mixed step (which has no vectorised bf16
        reduction): on the tiny preset's 10 stacked teachers, 5 ms of a 75 ms step went to it.
        The steps' tensors are kept as they are and folded into the sums every 256 steps and when
        read (:meth:`_train_totals`): three tensor ops per step instead of eight."""
        pred = logits.detach().argmax(-1)  # (B,) or (K, B)
        self._train_pending.append((loss.detach(), (pred == y).sum(), y.numel(), pred.shape[0] if pred.dim() == 2 else 1))
        if len(self._train_pending) >= 256:
            self._train_totals()

    def _train_totals(self) -> torch.Tensor:
        """The epoch's running sums so far (loss x frames, correct frames (member mean), frames)."""
        if self._train_pending:
            losses, hits, n, members = zip(*self._train_pending)
            dev = losses[0].device
            n_t = torch.tensor(n, dtype=torch.float32, device=dev)
            step = torch.stack([(torch.stack(losses).float() * n_t).sum(),
                                (torch.stack(hits).float() / torch.tensor(members, dtype=torch.float32, device=dev)).sum(),
                                n_t.sum()])
            self._train_sums = self._train_sums.to(dev) + step
            self._train_pending = []
        return self._train_sums

    # -- validation: dev frame accuracy --------------------------------------------------------
    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def on_validation_epoch_start(self) -> None:
        k = self.model.num_members if isinstance(self.model, StackedDNN) else 1
        self._val = torch.zeros(k + 1, device=self.device)  # correct per member, frames

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        x, y = batch["x"], batch["y"]
        logits = self._logits(x)  # (B, N) or (K, B, N)
        if logits.dim() == 2:
            logits = logits.unsqueeze(0)  # (1, B, N)
        hits = (logits.argmax(-1) == y.unsqueeze(0)).sum(dim=1)  # (K,)
        self._val += torch.cat([hits.to(self._val.dtype), self._val.new_tensor([y.numel()])])

    def on_validation_epoch_end(self) -> None:
        stats = self._val
        if self.trainer.world_size > 1:
            stats = self.trainer.strategy.reduce(stats.clone(), reduce_op="sum")
        frames = max(stats[-1].item(), 1.0)
        member_acc = (stats[:-1] / frames).tolist()
        dev_acc = sum(member_acc) / len(member_acc)
        self.log(MONITOR, dev_acc, prog_bar=True, sync_dist=False)
        if len(member_acc) > 1:
            for k, acc in enumerate(member_acc):
                self.log(f"dev/frame_acc_{k}", acc, sync_dist=False)
        if self.trainer.sanity_checking:
            return
        train = self._train_totals()
        if self.trainer.world_size > 1:
            train = self.trainer.strategy.reduce(train.clone(), reduce_op="sum")
        n = max(train[2].item(), 1.0)
        schedule = self.schedule
        row = {"epoch": self.current_epoch, "step": self.global_step,
               "lr": self.optim.lr * schedule.factor(max(self.global_step - 1, 0)),
               "train_loss": train[0].item() / n, "train_frame_acc_running": train[1].item() / n,
               "dev_frame_acc": dev_acc}
        if len(member_acc) > 1:
            row["dev_member_frame_acc"] = member_acc
        self.history = [h for h in self.history if h["epoch"] != self.current_epoch] + [row]
        if self.optim.lr_schedule == "newbob" and schedule.newbob_update(dev_acc):
            log.info("epoch %d: dev frame acc gained < %g after halving: converged, stopping", self.current_epoch,
                     self.optim.newbob_stop_threshold)
            self.trainer.should_stop = True
        log.info("epoch %d: train loss %.4f, dev frame acc %.4f", self.current_epoch, row["train_loss"], dev_acc)

    # -- on-the-fly augmentation ---------------------------------------------------------------
    @property
    def augments(self) -> bool:
        o = self.optim
        return bool(o.freq_warp or o.specaug_freq_masks or o.specaug_time_masks)

    def augmented(self, x: torch.Tensor) -> torch.Tensor:
        """The training windows as the model sees them: warped and masked when train.freq_warp or
        train.specaug_* ask for it, with draws seeded by (train.seed, step, rank) so a resumed run
        repeats them; else ``x`` itself."""
        if not self.augments:
            return x
        o = self.optim
        g = torch.Generator().manual_seed((o.seed * 1_000_003 + self.global_step) * 1024 + self.global_rank)
        return spec_augment(x, g, freq_warp=o.freq_warp, freq_masks=o.specaug_freq_masks,
                            freq_width=o.specaug_freq_width, time_masks=o.specaug_time_masks,
                            time_width=o.specaug_time_width)

    # -- checkpoints ---------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["asr_kd"] = {
            "config": self.run_config,
            "train": to_dict(self.optim),
            "history": self.history,
            "metrics": self.history[-1] if self.history else {},
            "train_sums": self._train_totals().tolist(),  # so a mid-epoch resume keeps the epoch's running loss
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        extra = checkpoint.get("asr_kd", {})
        self.history = list(extra.get("history", []))
        legacy = legacy_scheduler_state(checkpoint)
        if legacy is not None:  # written before the schedule was a scheduler: its state, read once
            log.info("checkpoint from before the LR scheduler: resuming its schedule at step %d (newbob scale %g)",
                     legacy["last_epoch"], legacy["scale"])
            checkpoint["lr_schedulers"] = [legacy]
        if "train_sums" in extra:
            self._train_sums = torch.tensor(extra["train_sums"])
            self._train_pending = []


class TeacherSystem(FrameSystem):
    """Cross-entropy on hard HMM-state labels, for one AcousticDNN or K stacked members.

    Stacked: loss = sum over members of each member's mean cross-entropy, so every member gets
    exactly the gradient it would get alone (their parameters are disjoint). Model selection,
    early stopping and the newbob schedule then follow the members' mean dev frame accuracy.
    """

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch["x"], batch["y"]  # (B, 26, 40), (B,) (soft targets, if any, are not needed here)
        # One fp32 copy of the (bf16 under bf16-mixed) logits: the loss and the running accuracy read it.
        logits = self.model(self.augmented(x)).float()  # (B, N) or (K, B, N)
        if logits.dim() == 3:
            k, b, n = logits.shape
            loss = F.cross_entropy(logits.reshape(k * b, n), y.repeat(k)) * k
        else:
            loss = F.cross_entropy(logits, y)
        if self._log_this_step():
            self.log("train/loss", loss, prog_bar=True)
        self._track_train(loss / (logits.shape[0] if logits.dim() == 3 else 1), logits, y)
        return loss


class DistillSystem(FrameSystem):
    """Student trained on ``w * CE(y, softmax(z_s)) + (1 - w) * T^2 * CE(p_ens(T), softmax(z_s / T))``.

    The soft targets come from one source (:mod:`asr_kd.nn.target_sources`): the frozen ensemble
    online (one batched forward over all K members per batch, on the clean windows), a cache of
    dense p_ens(T) looked up by window id, or the stored top-k + tail targets the batches carry.
    Whatever their form, the loss is one call, :func:`asr_kd.nn.losses.distillation_loss`, which
    applies the T^2 factor. An online source with ``logits=True`` replaces the soft term by its
    high-T limit (L2 on centred logits, ``matching_logits``). The ensemble is neither trained, nor
    wrapped by DDP, nor stored in checkpoints (it is rebuilt from the teachers' model files).

    Several students (``distill.stacked``: one per temperature) train as one :class:`StackedDNN`
    with one source each: the loss is the sum of the members' losses, so every member gets the
    gradient it would get alone; they share the learning-rate schedule (newbob on their mean dev
    frame accuracy), as stacked teachers do.
    """

    def __init__(
        self,
        student: AcousticDNN | StackedDNN,
        targets: SoftTargets | Sequence[SoftTargets],
        optim: TrainConfig,
        *,
        hard_weight: float,
        steps_per_epoch: int = 0,
        max_epochs: int = 1,
        run_config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(student, optim, steps_per_epoch=steps_per_epoch, max_epochs=max_epochs,
                         run_config=run_config)
        # A StackedDNN of K students takes K sources, one per member (the students of several
        # temperatures trained as one batched model); a single student, one.
        sources = list(targets) if isinstance(targets, Sequence) else [targets]
        members = student.num_members if isinstance(student, StackedDNN) else 1
        if len(sources) != members:
            raise ValueError(f"{members} student(s) but {len(sources)} soft-target source(s)")
        for source in sources:
            if source.num_pdfs is not None and source.num_pdfs != student.num_pdfs:
                raise ValueError(f"student has {student.num_pdfs} outputs but the targets {source.num_pdfs}")
            if isinstance(source, OnlineTargets) and source.logits and members > 1:
                raise ValueError("the matching-logits student trains alone")
        self._targets = sources  # a list: whatever it holds is not registered as a submodule
        self.temperatures = [source.T for source in sources]
        self.T = self.temperatures[0] if members == 1 else self.temperatures
        self.hard_weight = hard_weight
        self.matching_logits = isinstance(sources[0], OnlineTargets) and sources[0].logits

    @property
    def targets(self) -> SoftTargets:
        """The (first) member's source."""
        return self._targets[0]

    @property
    def stored_column(self) -> int | None:
        # a stack trains at several T: every column travels
        return self.targets.column if len(self._targets) == 1 and isinstance(self.targets, StoredTargets) else None

    def on_fit_start(self) -> None:
        super().on_fit_start()
        for source in self._targets:
            source.to(self.device)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch["x"], batch["y"]  # (B, 26, 40), (B,)
        z = self.model(self.augmented(x)).float()  # (B, N) or (K, B, N), fp32 once (the loss and the accuracy read it)
        members = z.unsqueeze(0) if z.dim() == 2 else z
        # stacked: the sum of the members' losses, so each member gets the gradient it would get alone
        terms = [(zk, source.targets(batch), source.T) for zk, source in zip(members, self._targets)]
        loss = sum(distillation_loss(zk, y, soft, T, self.hard_weight) for zk, soft, T in terms)
        if self._log_this_step():
            hard, soft = (sum(v) / len(terms) for v in zip(*(distillation_terms(zk.detach(), y, soft, T)
                                                               for zk, soft, T in terms)))
            self.log_dict({"train/hard_ce": hard, "train/soft_ce": soft})
            self.log("train/loss", loss / len(terms), prog_bar=True)
        self._track_train(loss / len(terms), z, y)
        return loss

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["asr_kd"].update(T=self.T, hard_weight=self.hard_weight, matching_logits=self.matching_logits)
