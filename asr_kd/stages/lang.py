"""The lang stage: the manifests' words (and the LM text's) with the lexicon -> the Kaldi lang
directory ``<exp>/lang/``: phones.txt, words.txt, topo, L.fst (:mod:`asr_kd.data.lang`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from asr_kd.config import RecipeConfig
from asr_kd.paths import SPLITS, RunPaths
from asr_kd.runner import marker_summary

DOC = "lexicon, phones.txt, words.txt, topology, L.fst"
READS = ("data.oov_policy", "data.extra_lexicon", "lang")
AFTER = ("prepare",)


def run(cfg: RecipeConfig, paths: RunPaths) -> dict[str, Any]:
    """Manifest (+ LM text) words and the lexicon -> phones.txt, words.txt, topo, L.fst (Kaldi formats)."""
    from asr_kd.data.lang import prepare_lang
    from asr_kd.data.lexicon import load_lexicon

    lm_text = marker_summary(paths, "prepare").get("lm_text") or None
    return prepare_lang(
        paths.lang, [paths.manifest(split) for split in SPLITS], Path(lm_text) if lm_text else None,
        load_lexicon(cfg.data.extra_lexicon or None), cfg.lang.sil_prob,
        cfg.lang.position_dependent_phones, cfg.data.oov_policy,
    )
