"""The align stage: GMM-HMM forced alignment -> per-frame HMM-state (pdf) ids, the DNN's labels.

``align.source=builtin`` trains and aligns with :mod:`asr_kd.stages._align`; ``align.source=kaldi``
imports the alignments of a Kaldi experiment, and its final.mdl, tree and lang for the graph
(:mod:`asr_kd.stages._kaldi_import`). Outputs under ``<exp>/align/`` (names in :mod:`asr_kd.paths`).
``python -m asr_kd.align.kaldi_export`` writes the result back out as a Kaldi experiment.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from typing import Any

from asr_kd.config import AlignConfig, RecipeConfig
from asr_kd.paths import RunPaths

DOC = "GMM-HMM forced alignment (or Kaldi import) -> per-frame HMM-state ids"
AFTER = ("lang", "features")


@dataclass(frozen=True)
class Work:
    align: AlignConfig
    num_ceps: int


def work(cfg: RecipeConfig) -> Work:
    return Work(cfg.align, cfg.features.num_ceps)


def run(cfg: RecipeConfig, paths: RunPaths) -> dict[str, Any]:
    """The built-in aligner, or the Kaldi import with ``align.source=kaldi``."""
    if cfg.align.source == "kaldi":
        from asr_kd.stages._kaldi_import import import_kaldi_alignments

        shutil.rmtree(paths.align_resume, ignore_errors=True)  # the built-in aligner's receipts: their files go

        return import_kaldi_alignments(cfg, paths)
    from asr_kd.stages._align import align_builtin

    shutil.rmtree(paths.align_lang, ignore_errors=True)  # a Kaldi import's lang: the built-in model uses lang/
    return align_builtin(cfg, paths)
