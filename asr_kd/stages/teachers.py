"""The teachers stage: K teacher DNNs differing only by their seed, resumable per teacher
(``teachers.only=k``: one task of a cluster job array; ``teachers.stacked``: all K at once).
The runs and their keys: :mod:`asr_kd.stages._training`; one training run: :mod:`asr_kd.nn.train`.
"""

from __future__ import annotations

from typing import Any

from asr_kd.config import TRAIN_WHERE_NOT_WHAT_READS, RecipeConfig
from asr_kd.paths import RunPaths

DOC = "K teacher DNNs (Lightning)"
READS = ("model", "train", *TRAIN_WHERE_NOT_WHAT_READS, "teachers.num_teachers", "teachers.stacked",
         "teachers.seed_base", "features.num_mel_bins", "!teachers.only")  # only: which share this process trains
AFTER = ("shards",)
DISTRIBUTED = True  # every rank of a DDP run joins


def run(cfg: RecipeConfig, paths: RunPaths) -> dict[str, Any]:
    """Train the K teachers; the summary lists each with its dev/test frame accuracy."""
    from asr_kd.stages._training import train_teachers

    return train_teachers(cfg, paths)
