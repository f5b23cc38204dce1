"""The distill stage: one student per temperature (``distill.temperatures``) from the ensemble
(online, or from cached targets on small corpora), and the paper's Table-5 runs on
``distill.subset_fraction`` of the data (:mod:`asr_kd.stages._training`).
"""

from __future__ import annotations

from typing import Any

from asr_kd.config import TRAIN_WHERE_NOT_WHAT_READS, RecipeConfig
from asr_kd.paths import RunPaths

DOC = "students at each T; Table-5 3%-data runs"
READS = ("model", "train", *TRAIN_WHERE_NOT_WHAT_READS, "distill", "!teachers", "!features.num_mel_bins")
AFTER = ("ensemble",)
DISTRIBUTED = True  # every rank of a DDP run joins


def run(cfg: RecipeConfig, paths: RunPaths) -> dict[str, Any]:
    """The students, the optional matching-logits student and the three Table-5 runs."""
    from asr_kd.stages._training import train_students

    return train_students(cfg, paths)
