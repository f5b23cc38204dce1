"""The graph stage's work on a run directory: the decoding LM (estimated from the LM text and the
training transcripts, or decode.arpa), its OOV rate and perplexity on dev and test, and the graphs
(:mod:`asr_kd.decoding.graph`) of the final system and, with a triphone aligner, of the monophone GMM."""

from __future__ import annotations

import dataclasses
import logging
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from asr_kd.align.model import load_model
from asr_kd.config import RecipeConfig
from asr_kd.data.lang import load_lang
from asr_kd.data.manifest import Utterance, iter_manifest, read_manifest
from asr_kd.data.vocab import decoding_vocabulary, manifest_words, open_text, oov_counts
from asr_kd.decoding import lm
from asr_kd.decoding.graph import LANG_SYMBOLS, GraphInputs, make_graph
from asr_kd.errors import InputError
from asr_kd.fileio import atomic_open
from asr_kd.files import GraphDir
from asr_kd.paths import RunPaths
from asr_kd.runner import marker_summary

log = logging.getLogger(__name__)

MAX_LM_TEXT_BYTES = 200 * 2**20  # beyond this the pure-Python estimator is too slow: supply an ARPA
EVAL_SPLITS = ("dev", "test")  # the splits whose OOV rate and perplexity the graph stage reports


def lm_train_text(paths: RunPaths, lm_text: Path | None) -> tuple[Path, str]:
    """``graph/lm-train-text.txt``: the corpus or user LM text (if any), then the training transcripts;
    and where it came from. The dev and test transcripts are never in it."""
    if lm_text is not None and lm_text.stat().st_size > MAX_LM_TEXT_BYTES:
        raise InputError(f"{lm_text} is {lm_text.stat().st_size / 2**20:.0f} MB: too large for the built-in LM "
                         "estimator; build an ARPA with KenLM/SRILM (or use LibriSpeech's 3-gram.arpa.gz) "
                         "and pass --set decode.arpa=PATH")
    out = paths.lm_train_text
    with atomic_open(out, "w", encoding="utf-8") as f:
        if lm_text is not None:
            with open_text(lm_text) as src:
                shutil.copyfileobj(src, f)
            f.write("\n")  # a text whose last line lacks its newline (blank lines are skipped)
        for utt in iter_manifest(paths.manifest("train")):
            f.write(utt.text + "\n")
    return out, (f"LM text {lm_text} + training transcripts" if lm_text else "training transcripts")


def prepare_lm(cfg: RecipeConfig, paths: RunPaths, vocab: set[str], train_words: set[str]) -> dict[str, Any]:
    """``graph/lm.arpa`` over the decoding vocabulary ``vocab``: ``decode.arpa`` (plain or .gz) with the
    training words it lacks added as unigrams, or a Kneser-Ney model of the LM text and the training
    transcripts (sentences with a word outside ``vocab`` skipped)."""
    if cfg.decode.arpa:
        src = Path(cfg.decode.arpa)
        if not src.is_file():
            raise InputError(f"decode.arpa={src} does not exist; fix the path or leave it empty")
        try:
            added = lm.copy_arpa_adding_unigrams(src, paths.lm_arpa, train_words & vocab)
            order = lm.arpa_order(paths.lm_arpa)
        except (ValueError, IndexError) as e:
            raise InputError(f"decode.arpa={src} is not a readable ARPA model ({e}); pass an ARPA file "
                             "(plain or .gz), e.g. LibriSpeech's 3-gram.arpa.gz") from e
        return {"source": f"user ARPA {src}", "order": order, **added}
    prepare = marker_summary(paths, "prepare")
    lm_text = Path(prepare["lm_text"]) if prepare.get("lm_text") else None
    text, source = lm_train_text(paths, lm_text)
    summary = lm.build_arpa(text, paths.lm_arpa, order=cfg.decode.lm_order, vocab=vocab)
    # the text is named relative to the run directory, which may move (an absolute path would go stale)
    return {"source": f"Kneser-Ney from {source} (graph/{text.name})", **summary}


def evaluate_lm(paths: RunPaths, vocab: set[str], order: int, splits: Iterable[str] = EVAL_SPLITS) -> dict[str, Any]:
    """Per split (dev, test): its transcripts' tokens outside the decoding vocabulary (each one a
    word error no search can avoid) and the perplexity of ``graph/lm.arpa`` on them (SRILM's: OOVs
    not scored, ``</s>`` counted; :func:`asr_kd.decoding.lm.oov_perplexity`)."""
    sentences = {split: [u.words for u in _manifest(paths, split)] for split in splits}
    sentences = {split: sents for split, sents in sentences.items() if sents}
    # one pass over the ARPA for every split: only the n-grams their text can look up
    keep = set().union(*(lm.text_ngrams(sents, order) for sents in sentences.values())) if sentences else set()
    model = lm.read_arpa(paths.lm_arpa, keep=keep) if sentences else None
    out: dict[str, Any] = {}
    for split, sents in sentences.items():
        counts = oov_counts(sents, vocab)
        try:
            ppl: float | None = round(float(lm.oov_perplexity(model, sents, vocab)["perplexity"]), 3)
        except ValueError:  # every token an OOV: nothing to score
            ppl = None
        out[split] = {**counts, "perplexity": ppl}
        log.info("LM on %s: %d tokens, %d OOV (%.2f%%), perplexity %s", split, counts["tokens"],
                 counts["oov_tokens"], 100 * counts["oov_rate"], ppl)
    return out


def _manifest(paths: RunPaths, split: str) -> list[Utterance]:
    return read_manifest(paths.manifest(split)) if paths.manifest(split).exists() else []


def words_outside_graph(lang_words: set[str], in_graph: set[str], arpa: Path) -> set[str]:
    """The lang's words the graph's words.txt drops: transcript words (dev/test) that only the aligner
    needs. Whatever symbol the LM has (a Kaldi lang's <UNK> in a user ARPA) stays, as G may output it."""
    return lang_words - in_graph - lm.unigram_scan(arpa)[0]


def build_graphs(cfg: RecipeConfig, paths: RunPaths) -> dict[str, Any]:
    """The graph stage's work: LM -> G -> HCLG under ``<exp>/graph`` (and ``graph/mono``); its summary.

    The decoding vocabulary (:func:`asr_kd.data.vocab.decoding_vocabulary`) is the LM's words and
    the training transcripts', those of them the lexicon pronounces; the LM, G and the graph's
    ``words.txt`` hold it alone, so a dev or test word outside it is an OOV (counted per split)."""
    lang = load_lang(paths.decode_lang)  # lang/, or align/lang/ with an imported Kaldi model
    model = load_model(paths.align)
    lang_words = {w for w in lang.words if w not in LANG_SYMBOLS}
    lm_text = marker_summary(paths, "prepare").get("lm_text") or None
    train_words = manifest_words([paths.manifest("train")])
    try:
        vocab, vocab_summary = decoding_vocabulary([paths.manifest("train")], lm_text, cfg.decode.arpa or None,
                                                   cfg.data.lm_vocab_size)
    except (OSError, ValueError) as e:
        raise InputError(f"{e}; fix decode.arpa / data.lm_text") from e
    in_graph = vocab & lang_words
    vocab_summary.update(in_graph=len(in_graph), without_pronunciation=len(vocab - lang_words),
                         without_pronunciation_examples=sorted(vocab - lang_words)[:20])
    lm_summary = prepare_lm(cfg, paths, in_graph, train_words)
    lm_summary["vocabulary"] = vocab_summary
    lm_summary["splits"] = evaluate_lm(paths, in_graph, int(lm_summary.get("order") or cfg.decode.lm_order))
    drop = words_outside_graph(lang_words, in_graph, paths.lm_arpa)
    inputs = GraphInputs(
        l_disambig=lang.read_l_fst(disambig=True),
        disambig_phones=lang.disambig_phones,
        words_txt=lang.words_txt_path,
        trans_model=model.trans_model,
        ctx_dep=model.ctx_dep,
        self_loop_scale=cfg.decode.self_loop_scale,
    )
    key_files = [lang.l_disambig_fst_path, paths.tree, paths.final_mdl]
    info = make_graph(inputs, paths.lm_arpa, paths.graph, key_files, drop_words=drop)
    summary = {"lm": lm_summary, **{k: v for k, v in info.items() if k != "key"},
               "num_pdfs": int(model.trans_model.num_pdfs),
               "num_transition_ids": int(model.trans_model.num_transition_ids)}
    if cfg.decode.gmm_monophone and paths.mono_mdl.exists():
        # The monophone GMM the triphone system grew from, decoded beside it (same LM and lexicon).
        mono = load_model(paths.mono_dir)
        mono_inputs = dataclasses.replace(inputs, trans_model=mono.trans_model, ctx_dep=mono.ctx_dep)
        mono_keys = [lang.l_disambig_fst_path, paths.mono_tree, paths.mono_mdl]
        mono_info = make_graph(mono_inputs, paths.lm_arpa, paths.mono_graph, mono_keys,
                               g_fst=GraphDir(paths.graph).g_fst, drop_words=drop)
        summary["monophone"] = {k: mono_info[k] for k in ("HCLG", "context_width", "build_s", "cached")
                                if k in mono_info} | {"num_pdfs": int(mono.trans_model.num_pdfs)}
    return summary
