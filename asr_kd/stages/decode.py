"""The decode stage: every system of the run (teachers, ensemble, students, Table-5 runs, the GMMs)
through its HCLG -> WER on dev (choosing the acoustic scale) and test (:mod:`asr_kd.stages._decode`).
"""

from __future__ import annotations

from typing import Any

from asr_kd.config import RecipeConfig
from asr_kd.paths import RunPaths

DOC = "hybrid decoding, WER"
# The systems to decode and how the networks run: via the training stages, not hashed here (the
# results' receipts are keyed by the model files, the precision and the graph: asr_kd.decoding.receipts).
READS = ("decode", "!decode.num_jobs", "!decode.chunk_utts", "!model", "!train.precision",
         "!train.accelerator", "!teachers", "!distill", "!align.context")
AFTER = ("graph", "distill")


def run(cfg: RecipeConfig, paths: RunPaths) -> dict[str, Any]:
    """WER and frame accuracy of every system; the decode summaries under ``<exp>/decode``."""
    from asr_kd.stages._decode import decode_systems

    return decode_systems(cfg, paths)
