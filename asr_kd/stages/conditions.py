"""The conditions stage: the run's systems on extra test sets, beside the usual test set.

``data.extra_test_subsets`` (LibriSpeech: ``dev-other``, ``test-other``) name them: each subset of
the corpus is read here (the prepare stage's reader and settings; an utterance with a word the
lexicon lacks is kept, as in any test set) into ``eval/<subset>/manifest.jsonl`` and evaluated as
``python -m asr_kd.evaluate`` would (:mod:`asr_kd.stages._evaluate`: features with the run's
settings, frame labels from the run's GMM) into ``eval/<subset>/``, for the teachers, the ensemble
and the students, every system at the acoustic scale it chose on dev, and also searched at every
scale of ``decode.acoustic_scales`` (its WER per scale in the summary). Its summary also gives the
subset's OOV rate against the decoding vocabulary and the LM's perplexity (``lm``), as the graph
stage does for dev and test.
The summary gives, per test set, the mean teacher, the ensemble and the best student (on dev)
with 95 % bootstrap intervals over its utterances, the ensemble's gain over the mean teacher and
the share of it the student keeps. Without an extra test set the stage does nothing.
"""

from __future__ import annotations

from pathlib import Path
from dataclasses import dataclass
from typing import Any

from asr_kd.config import RecipeConfig
from asr_kd.paths import RunPaths

DOC = "extra test sets (data.extra_test_subsets)"
AFTER = ("decode",)
# The corpus is read as prepare reads it; the systems and their scales come from decode.


@dataclass(frozen=True)
class Work:
    """Which extra test sets (the systems and how they are decoded: the stages before)."""

    extra_test_subsets: tuple[str, ...]


def work(cfg: RecipeConfig) -> Work:
    return Work(cfg.data.extra_test_subsets)


def run(cfg: RecipeConfig, paths: RunPaths) -> dict[str, Any]:
    """Evaluate the teachers, the ensemble and the students on each extra test set."""
    from asr_kd.data.manifest import read_manifest
    from asr_kd.stages._evaluate import condition_summary, evaluate_systems, prepare_data
    from asr_kd.stages._decode import discover_systems
    from asr_kd.paths import EvalDir

    out: dict[str, Any] = {}
    for name, manifest in extra_test_manifests(cfg, paths).items():
        ep = EvalDir(paths.eval_dir(name))
        data = prepare_data(cfg, paths, ep, read_manifest(manifest))
        systems = [s.name for s in discover_systems(cfg, paths)
                   if s.name.startswith(("teacher-", "distilled_T")) or s.name == "ensemble"]
        report = evaluate_systems(cfg, paths, ep, data, systems, scale_grid=cfg.decode.acoustic_scales)
        out[name] = {**condition_summary(paths, ep, report, data), "lm": lm_on(paths, manifest)}
    return {"conditions": out}


def extra_test_manifests(cfg: RecipeConfig, paths: RunPaths) -> dict[str, Path]:
    """Each subset of ``data.extra_test_subsets`` read from the run's corpus (as prepare reads it) into
    ``eval/<subset>/manifest.jsonl``; name -> that manifest."""
    from asr_kd.data.manifest import write_manifest
    from asr_kd.paths import EvalDir
    from asr_kd.runner import StageError
    from asr_kd.stages.prepare import corpus_format, corpus_root, min_utterance_samples
    from data_prep.formats import read_formatted_corpus
    from data_prep.librispeech import CorpusError

    out: dict[str, Path] = {}
    for name in cfg.data.extra_test_subsets:
        ep = EvalDir(paths.eval_dir(name))
        try:
            fmt, _ = corpus_format(cfg)
            corpus = read_formatted_corpus(fmt, corpus_root(cfg), {name: (name,)}, ep.audio,
                                           sample_rate=cfg.data.sample_rate, extra_lexicon=cfg.data.extra_lexicon,
                                           oov_policy="g2p", max_utts_per_split=cfg.data.max_utts_per_split,
                                           lm_text="", min_samples=min_utterance_samples(cfg))
        except CorpusError as e:
            raise StageError(f"data.extra_test_subsets={name}: {e}") from e
        write_manifest(ep.manifest, corpus.splits[name])
        out[name] = ep.manifest
    return out


def lm_on(paths: RunPaths, manifest: Path) -> dict[str, Any]:
    """OOV tokens against the decoding vocabulary (``graph/words.txt``) and the perplexity of
    ``graph/lm.arpa`` on a manifest's transcripts (as the graph stage reports for dev and test)."""
    from asr_kd.data.manifest import read_manifest
    from asr_kd.data.vocab import oov_counts
    from asr_kd.decoding import lm
    from asr_kd.decoding.graph import LANG_SYMBOLS, read_word_symbols
    from asr_kd.paths import GraphDir

    vocab = set(read_word_symbols(GraphDir(paths.graph).words).values()) - LANG_SYMBOLS
    sentences = [u.words for u in read_manifest(manifest)]
    counts = oov_counts(sentences, vocab)
    try:
        ppl: float | None = round(float(lm.arpa_perplexity(paths.lm_arpa, sentences, vocab)["perplexity"]), 3)
    except ValueError:
        ppl = None
    return {**counts, "perplexity": ppl}
