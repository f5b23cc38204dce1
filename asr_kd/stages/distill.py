"""The distill stage: one student per temperature (``distill.temperatures``) from the ensemble
(online, or from cached targets on small corpora), and the paper's Table-5 runs on
``distill.subset_fraction`` of the data (:mod:`asr_kd.stages._training`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from asr_kd.config import DistillConfig, ModelConfig, RecipeConfig, TrainConfig, train_work
from asr_kd.paths import RunPaths

DOC = "students at each T; Table-5 3%-data runs"
AFTER = ("ensemble",)


@dataclass(frozen=True)
class Work:
    """What the students and the Table-5 runs depend on besides the ensemble."""

    model: ModelConfig
    train: TrainConfig  # as results depend on it: config.train_work
    distill: DistillConfig


def work(cfg: RecipeConfig) -> Work:
    return Work(cfg.model, train_work(cfg.train), cfg.distill)


DISTRIBUTED = True  # every rank of a DDP run joins


def run(cfg: RecipeConfig, paths: RunPaths) -> dict[str, Any]:
    """The students, the optional matching-logits student and the three Table-5 runs."""
    from asr_kd.stages._training import train_students

    return train_students(cfg, paths)
