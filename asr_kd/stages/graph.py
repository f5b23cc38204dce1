"""The graph stage: LM text (or ``decode.arpa``) -> ``graph/lm.arpa`` -> G.fst; with L, the tree
and the model -> HCLG.fst, and with a triphone align stage the monophone GMM's graph in
``graph/mono`` too (:mod:`asr_kd.decoding.graph`, :mod:`asr_kd.decoding.lm`). L and the words are
``lang/``'s, or ``align/lang/``'s when the align stage imported a Kaldi model with its lang.
"""

from __future__ import annotations

from typing import Any

from asr_kd.config import RecipeConfig
from asr_kd.paths import RunPaths

DOC = "n-gram LM and HCLG"
READS = ("decode.lm_order", "decode.arpa", "decode.self_loop_scale", "decode.gmm_monophone", "lang")
AFTER = ("lang", "align")


def run(cfg: RecipeConfig, paths: RunPaths) -> dict[str, Any]:
    """LM -> G -> HCLG under ``<exp>/graph``; returns the summary (sizes, LM)."""
    from asr_kd.decoding.graph import build_graphs

    return build_graphs(cfg, paths)
