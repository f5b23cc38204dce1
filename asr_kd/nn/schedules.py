"""The learning-rate schedule of a training run, as one torch LR scheduler stepped per optimiser step.

Lightning steps it after every optimiser step (``configure_optimizers`` returns it with
``"interval": "step"``) and saves its ``state_dict`` in every checkpoint, so a resumed run (mid-epoch
included) continues with the same rate and the same newbob state.

Schedules (``train.lr_schedule``), always after a linear warm-up of ``train.warmup_steps``:

* ``cosine`` (default, with Adam): decays to ``train.min_lr_ratio`` x lr over all planned steps.
  Adam needs no per-corpus tuning of the step size, which suits the short CPU presets.
* ``newbob`` (paper preset, with SGD + momentum): the classic hybrid-DNN schedule (Kaldi nnet1,
  the paper's era): keep the rate while the dev frame accuracy improves by at least
  ``train.newbob_threshold`` per epoch, then halve it every epoch; with
  ``train.newbob_stop_threshold`` > 0 the run ends (converged) once an epoch after halving began
  gains less than that (Kaldi nnet1's ``end_halving_impr``), capped by ``max_epochs``.
  The system calls :meth:`FrameLR.newbob_update` with each epoch's dev accuracy.
* ``constant``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.optim.lr_scheduler import LRScheduler

from asr_kd.config import TrainConfig


class FrameLR(LRScheduler):
    """``lr(step) = base_lr x factor(step)``; ``last_epoch`` counts optimiser steps (0 = the first).

    Its ``state_dict`` (saved by Lightning) holds the step, the planned steps and the newbob state
    (``scale``, ``halving``, ``best``). ``total_steps`` (the cosine decay's length) may be left None
    and set by :meth:`plan` once it is known (the trainer's estimate needs the training data, which
    must not be loaded before a resumed run has restored its loader state).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, optim: TrainConfig, total_steps: int | None = None,
                 last_epoch: int = -1) -> None:
        self.schedule = optim.lr_schedule
        self.warmup_steps = optim.warmup_steps
        self.min_lr_ratio = optim.min_lr_ratio
        self.newbob_threshold = optim.newbob_threshold
        self.newbob_stop_threshold = optim.newbob_stop_threshold
        self.total_steps = total_steps  # for the cosine decay; 0 = unknown (no decay), None = not planned yet
        self.scale, self.halving, self.best = 1.0, False, -1.0  # newbob
        super().__init__(optimizer, last_epoch)

    def factor(self, step: int) -> float:
        """The rate of optimiser step ``step`` over the base rate."""
        warm = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps > 0 else 1.0
        if self.schedule == "cosine":
            if self.total_steps:  # > 0
                progress = min(1.0, step / self.total_steps)
                floor = self.min_lr_ratio
                warm *= floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
        elif self.schedule == "newbob":
            warm *= self.scale
        return warm

    def _rates(self) -> list[float]:
        return [base * self.factor(self.last_epoch) for base in self.base_lrs]

    def get_lr(self) -> list[float]:
        return self._rates()

    def _apply(self) -> None:
        """Write the current step's rate into the optimiser (after a newbob change or a restore)."""
        lrs = self._rates()
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        self._last_lr = lrs

    def plan(self, total_steps: int) -> None:
        """Set the planned optimiser steps of the run (before its first step)."""
        self.total_steps = total_steps
        self._apply()

    def newbob_update(self, dev_acc: float) -> bool:
        """Halve the rate once dev stops improving by ``newbob_threshold``; True = converged (stop).

        The new rate applies from the next optimiser step on."""
        gain = dev_acc - self.best if self.best >= 0 else math.inf
        stop = self.halving and self.newbob_stop_threshold > 0 and gain < self.newbob_stop_threshold
        if gain < self.newbob_threshold:
            self.halving = True
        if self.halving:
            self.scale *= 0.5
        self.best = max(self.best, dev_acc)
        self._apply()
        return stop

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._apply()


def legacy_scheduler_state(checkpoint: dict[str, Any]) -> dict[str, Any] | None:
    """A checkpoint written before the schedule was a scheduler (no ``lr_schedulers``, the newbob
    state in ``checkpoint["asr_kd"]["newbob"]``): the :class:`FrameLR` state it implies, else None.

    The old code set the rate of step ``global_step`` at the start of each batch from the newbob
    scale and the planned steps, so the step and the newbob state are all the schedule had."""
    extra = checkpoint.get("asr_kd", {})
    if checkpoint.get("lr_schedulers") or "newbob" not in extra or "optimizer_states" not in checkpoint:
        return None
    nb = extra["newbob"]
    return {"last_epoch": int(checkpoint.get("global_step", 0)), "scale": float(nb["scale"]),
            "halving": bool(nb["halving"]), "best": float(nb["best"])}
