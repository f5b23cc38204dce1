"""The shards stage: features + CMVN + alignments -> webdataset shards and ``index.json`` per split
(:mod:`asr_kd.data.shards`, which also holds their reader).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from asr_kd.config import RecipeConfig, ShardConfig
from asr_kd.paths import SPLITS, RunPaths
from asr_kd.runner import marker_summary

DOC = "webdataset shards of normalised feats + labels"
AFTER = ("features", "align")


@dataclass(frozen=True)
class Work:
    """What the shards add to the features (the rest reaches them through the features stage)."""

    shards: ShardConfig
    cmvn: str
    storage_dtype: str


def work(cfg: RecipeConfig) -> Work:
    return Work(cfg.shards, cfg.features.cmvn, cfg.features.storage_dtype)


def run(cfg: RecipeConfig, paths: RunPaths) -> dict[str, Any]:
    """Shards and index.json of every split; utterances without labels named and counted."""
    from asr_kd.data.shards import SplitFiles, write_shards

    num_pdfs = marker_summary(paths, "align").get("num_pdfs")  # None: labels unchecked against the aligner
    splits = {s: SplitFiles(paths.manifest(s), paths.fbank_scp(s), paths.pdf_scp(s), paths.shard_dir(s))
              for s in SPLITS}
    return write_shards(splits, paths.cmvn, None if num_pdfs is None else int(num_pdfs), cfg.features, cfg.shards)
