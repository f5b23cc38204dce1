"""The shards stage: features + CMVN + alignments -> webdataset shards and ``index.json`` per split
(:mod:`asr_kd.data.shards`, which also holds their reader).
"""

from __future__ import annotations

from typing import Any

from asr_kd.config import RecipeConfig
from asr_kd.paths import RunPaths

DOC = "webdataset shards of normalised feats + labels"
READS = ("shards", "features.cmvn", "features.storage_dtype", "!features")  # the rest: via the features stage
AFTER = ("features", "align")


def run(cfg: RecipeConfig, paths: RunPaths) -> dict[str, Any]:
    """Shards and index.json of every split; utterances without labels named and counted."""
    from asr_kd.data.shards import write_shards

    return write_shards(paths, cfg.features, cfg.shards)
