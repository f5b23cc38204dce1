"""The ensemble stage: the K teachers as one batched, frozen ensemble (``distill.ensemble_mean``);
its dev/test frame accuracy beside each teacher's (:mod:`asr_kd.stages._training`, :mod:`asr_kd.nn.ensemble`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from asr_kd.config import RecipeConfig
from asr_kd.paths import RunPaths

DOC = "average of the K teachers' soft targets"
AFTER = ("teachers",)


@dataclass(frozen=True)
class Work:
    """How the teachers are combined (the teachers themselves: the teachers stage)."""

    ensemble_mean: str


def work(cfg: RecipeConfig) -> Work:
    return Work(cfg.distill.ensemble_mean)


def run(cfg: RecipeConfig, paths: RunPaths) -> dict[str, Any]:
    """The ensemble's frame accuracy on dev and test beside its members'."""
    from asr_kd.stages._training import evaluate_ensemble

    return evaluate_ensemble(cfg, paths)
