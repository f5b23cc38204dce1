"""The ensemble stage: the K teachers as one batched, frozen ensemble (``distill.ensemble_mean``);
its dev/test frame accuracy beside each teacher's (:mod:`asr_kd.stages._training`, :mod:`asr_kd.nn.ensemble`).
"""

from __future__ import annotations

from typing import Any

from asr_kd.config import RecipeConfig
from asr_kd.paths import RunPaths

DOC = "average of the K teachers' soft targets"
READS = ("distill.ensemble_mean", "!model", "!train", "!teachers.num_teachers")  # the rest: via the teachers stage
AFTER = ("teachers",)


def run(cfg: RecipeConfig, paths: RunPaths) -> dict[str, Any]:
    """The ensemble's frame accuracy on dev and test beside its members'."""
    from asr_kd.stages._training import evaluate_ensemble

    return evaluate_ensemble(cfg, paths)
