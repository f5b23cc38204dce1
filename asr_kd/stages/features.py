"""The features stage: manifests -> fbank (the DNN's input) and MFCC (the aligner's) ark/scp per
split, and the CMVN statistics (global from train, per speaker) (:mod:`asr_kd.data.features`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from asr_kd.config import RecipeConfig
from asr_kd.paths import SPLITS, RunPaths
from asr_kd.work import take

DOC = "fbank + MFCC, CMVN stats"
AFTER = ("prepare",)


@dataclass(frozen=True)
class Work:
    """What the features depend on (CMVN and storage: the shards stage's)."""

    num_mel_bins: int
    frame_length_ms: float
    frame_shift_ms: float
    num_ceps: int
    sample_rate: int


def work(cfg: RecipeConfig) -> Work:
    return take(Work, cfg.features, cfg.data)


def run(cfg: RecipeConfig, paths: RunPaths) -> dict[str, Any]:
    """fbank + MFCC of every split, CMVN stats; failures named and counted."""
    from asr_kd.data.features import compute_features

    return compute_features({s: paths.manifest(s) for s in SPLITS}, {s: paths.fbank_scp(s) for s in SPLITS},
                            {s: paths.mfcc_scp(s) for s in SPLITS}, paths.cmvn, cfg.features,
                            sample_rate=cfg.data.sample_rate)
