"""The decode stage: every system of the run (teachers, ensemble, students, Table-5 runs, the GMMs)
through its HCLG -> WER on dev (choosing the acoustic scale) and test (:mod:`asr_kd.stages._decode`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from asr_kd.config import DecodeConfig, RecipeConfig
from asr_kd.paths import RunPaths

DOC = "hybrid decoding, WER"
AFTER = ("graph", "distill")


@dataclass(frozen=True)
class Work:
    """How the systems are decoded and scored. The systems themselves reach the stage through the
    training stages; the results' receipts are keyed by the model files, the precision and the graph
    (:mod:`asr_kd.decoding.receipts`)."""

    decode: DecodeConfig


def work(cfg: RecipeConfig) -> Work:
    return Work(cfg.decode)


def run(cfg: RecipeConfig, paths: RunPaths) -> dict[str, Any]:
    """WER and frame accuracy of every system; the decode summaries under ``<exp>/decode``."""
    from asr_kd.stages._decode import decode_systems

    return decode_systems(cfg, paths)
