"""The graph stage: the decoding vocabulary's LM (``decode.arpa``, or Kneser-Ney on the LM text and
the training transcripts) -> ``graph/lm.arpa`` -> G.fst; with L, the tree and the model -> HCLG.fst,
and with a triphone align stage the monophone GMM's graph in ``graph/mono`` too
(:mod:`asr_kd.decoding.graph`, :mod:`asr_kd.decoding.lm`). L and the words are ``lang/``'s, or
``align/lang/``'s when the align stage imported a Kaldi model with its lang.

The decoding vocabulary (:mod:`asr_kd.data.vocab`) is the LM's words plus the training
transcripts', never dev or test's: a test word outside it is not in G, nor in ``graph/words.txt``,
and the summary counts it (``lm.splits.<split>.oov_tokens``, ``oov_rate``) beside the LM's
perplexity on dev and test (``lm.splits.<split>.perplexity``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from asr_kd.config import LangConfig, RecipeConfig
from asr_kd.paths import RunPaths
from asr_kd.work import take

DOC = "n-gram LM and HCLG"
AFTER = ("lang", "align")


@dataclass(frozen=True)
class Work:
    """What the LM and the graphs depend on besides the lang and align stages' outputs."""

    lm_order: int
    arpa: str
    self_loop_scale: float
    gmm_monophone: bool
    lm_vocab_size: int
    lang: LangConfig


def work(cfg: RecipeConfig) -> Work:
    return take(Work, cfg.decode, cfg.data, lang=cfg.lang)


# 1: the decoding vocabulary is the LM's words and the training transcripts' (no dev or test word);
# the LM is trained on the LM text and the training transcripts; OOV rate and perplexity per split.
VERSION = 1
VERSION_NOTE = ("the decoding vocabulary is now the LM's words plus the training transcripts', without the dev "
                "and test words (LibriSpeech's scoring convention); --force graph rebuilds the LM and HCLG, and the "
                "stages after it re-run")


def run(cfg: RecipeConfig, paths: RunPaths) -> dict[str, Any]:
    """LM -> G -> HCLG under ``<exp>/graph``; returns the summary (sizes, LM, OOV rates, perplexities)."""
    from asr_kd.stages._graph import build_graphs

    return build_graphs(cfg, paths)
