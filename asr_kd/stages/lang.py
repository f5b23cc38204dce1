"""The lang stage: the manifests' words (and the LM text's) with the lexicon -> the Kaldi lang
directory ``<exp>/lang/``: phones.txt, words.txt, topo, L.fst (:mod:`asr_kd.data.lang`). With
``data.oov_policy=g2p`` the words the lexicon lacks get espeak-ng's pronunciations
(:mod:`asr_kd.data.g2p`), listed in ``lang/lexicon_g2p.txt`` and counted in the summary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from asr_kd.config import RecipeConfig
from asr_kd.paths import SPLITS, RunPaths
from asr_kd.runner import StageError, marker_summary

DOC = "lexicon, phones.txt, words.txt, topology, L.fst"
READS = ("data.oov_policy", "data.extra_lexicon", "lang")
AFTER = ("prepare",)


def run(cfg: RecipeConfig, paths: RunPaths) -> dict[str, Any]:
    """Manifest (+ LM text) words and the lexicon -> phones.txt, words.txt, topo, L.fst (Kaldi formats)."""
    from asr_kd.data.g2p import G2PError
    from asr_kd.data.lang import prepare_lang
    from asr_kd.data.lexicon import load_lexicon

    lm_text = marker_summary(paths, "prepare").get("lm_text") or None
    try:
        return prepare_lang(
            paths.lang, [paths.manifest(split) for split in SPLITS], Path(lm_text) if lm_text else None,
            load_lexicon(cfg.data.extra_lexicon or None), cfg.lang.sil_prob,
            cfg.lang.position_dependent_phones, cfg.data.oov_policy,
        )
    except G2PError as e:
        raise StageError(str(e)) from e
