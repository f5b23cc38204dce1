"""The lang stage: the decoding vocabulary and every transcript's words, with the lexicon -> the Kaldi
lang directory ``<exp>/lang/``: phones.txt, words.txt, topo, L.fst (:mod:`asr_kd.data.lang`).

The decoding vocabulary (:mod:`asr_kd.data.vocab`) is the LM's words (``decode.arpa``'s, else the
LM text's, capped by ``data.lm_vocab_size``) plus the training transcripts'; the dev and test
transcripts' words are in the lexicon too, for the aligner only (their frame labels): the graph
stage's LM, and so the decoding graph, holds the vocabulary alone. Pronunciations come from
CMUdict with ``data.extra_lexicon`` (e.g. LibriSpeech's ``librispeech-lexicon.txt``) over it; with
``data.oov_policy=g2p`` the remaining words get espeak-ng's (:mod:`asr_kd.data.g2p`), listed in
``lang/lexicon_g2p.txt`` and counted in the summary.
"""

from __future__ import annotations

from pathlib import Path
from dataclasses import dataclass
from typing import Any

from asr_kd.config import LangConfig, RecipeConfig
from asr_kd.paths import SPLITS, RunPaths
from asr_kd.runner import StageError, marker_summary
from asr_kd.work import take

DOC = "lexicon, phones.txt, words.txt, topology, L.fst"
AFTER = ("prepare",)


@dataclass(frozen=True)
class Work:
    """What the lexicon and word lists depend on (the words: the LM's and the training transcripts')."""

    oov_policy: str
    extra_lexicon: str
    lm_vocab_size: int
    arpa: str
    lang: LangConfig


def work(cfg: RecipeConfig) -> Work:
    return take(Work, cfg.data, cfg.decode, lang=cfg.lang)


def run(cfg: RecipeConfig, paths: RunPaths) -> dict[str, Any]:
    """The vocabulary and transcript words, and the lexicon -> phones.txt, words.txt, topo, L.fst (Kaldi formats)."""
    from asr_kd.data.g2p import G2PError
    from asr_kd.data.lang import prepare_lang
    from asr_kd.data.lexicon import load_lexicon
    from asr_kd.data.vocab import decoding_vocabulary

    lm_text = marker_summary(paths, "prepare").get("lm_text") or None
    if cfg.decode.arpa and not Path(cfg.decode.arpa).is_file():
        raise StageError(f"decode.arpa={cfg.decode.arpa} does not exist; fix the path or leave it empty")
    try:
        vocab, vocab_summary = decoding_vocabulary([paths.manifest("train")], lm_text, cfg.decode.arpa or None,
                                                   cfg.data.lm_vocab_size)
        lexicon = load_lexicon(cfg.data.extra_lexicon or None)
    except (OSError, ValueError) as e:
        raise StageError(f"{e}; fix decode.arpa / data.lm_text / data.extra_lexicon") from e
    try:
        summary = prepare_lang(
            paths.lang, [paths.manifest(split) for split in SPLITS], vocab, lexicon, cfg.lang.sil_prob,
            cfg.lang.position_dependent_phones, cfg.data.oov_policy,
        )
    except G2PError as e:
        raise StageError(str(e)) from e
    return {**summary, "vocabulary": vocab_summary}
