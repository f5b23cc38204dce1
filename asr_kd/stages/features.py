"""The features stage: manifests -> fbank (the DNN's input) and MFCC (the aligner's) ark/scp per
split, and the CMVN statistics (global from train, per speaker) (:mod:`asr_kd.data.features`).
"""

from __future__ import annotations

from typing import Any

from asr_kd.config import RecipeConfig
from asr_kd.paths import SPLITS, RunPaths

DOC = "fbank + MFCC, CMVN stats"
READS = ("features.num_mel_bins", "features.frame_length_ms", "features.frame_shift_ms", "features.num_ceps",
         "data.sample_rate")
AFTER = ("prepare",)


def run(cfg: RecipeConfig, paths: RunPaths) -> dict[str, Any]:
    """fbank + MFCC of every split, CMVN stats; failures named and counted."""
    from asr_kd.data.features import compute_features

    return compute_features({s: paths.manifest(s) for s in SPLITS}, {s: paths.fbank_scp(s) for s in SPLITS},
                            {s: paths.mfcc_scp(s) for s in SPLITS}, paths.cmvn, cfg.features,
                            sample_rate=cfg.data.sample_rate)
