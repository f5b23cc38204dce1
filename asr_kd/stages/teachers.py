"""The teachers stage: K teacher DNNs differing only by their seed, resumable per teacher
(``teachers.only=k``: one task of a cluster job array; ``teachers.stacked``: all K at once).
The runs and their keys: :mod:`asr_kd.stages._training`; one training run: :mod:`asr_kd.nn.train`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from asr_kd.config import ModelConfig, RecipeConfig, TrainConfig, train_work
from asr_kd.paths import RunPaths

DOC = "K teacher DNNs (Lightning)"
AFTER = ("shards",)


@dataclass(frozen=True)
class Work:
    """What the K teachers depend on (teachers.only: which of them this process trains, not what)."""

    model: ModelConfig
    train: TrainConfig  # as results depend on it: config.train_work
    num_teachers: int
    stacked: bool
    seed_base: int
    num_mel_bins: int


def work(cfg: RecipeConfig) -> Work:
    t = cfg.teachers
    return Work(cfg.model, train_work(cfg.train), t.num_teachers, t.stacked, t.seed_base, cfg.features.num_mel_bins)


DISTRIBUTED = True  # every rank of a DDP run joins


def run(cfg: RecipeConfig, paths: RunPaths) -> dict[str, Any]:
    """Train the K teachers; the summary lists each with its dev/test frame accuracy."""
    from asr_kd.stages._training import train_teachers

    return train_teachers(cfg, paths)
