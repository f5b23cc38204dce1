"""Decoding graphs: G from an ARPA LM and HCLG = H o C o L o G, as Kaldi's ``utils/mkgraph.sh``.

Owns everything under ``<exp>/graph/`` (names in :mod:`asr_kd.paths`): ``lm.arpa`` (estimated by
:mod:`asr_kd.decoding.lm` or copied from ``decode.arpa``), ``G.fst``, ``HCLG.fst`` and ``graph_info.json``
(sizes, build time and the cache key: hashes of L_disambig.fst, the tree, the model, the LM and
the self-loop scale). A graph whose key matches is reused instead of rebuilt. With a triphone
align stage, ``graph/mono/`` holds the same files for the monophone system it started from.

The recipe, step by step (Kaldi tool names in brackets):
    G     = arpa2fst(lm.arpa, disambig #0)                        [arpa2fst]
    LG    = min(det_log(L_disambig o G))                          [fsttablecompose, fstdeterminizestar]
    CLG   = C o LG with the tree's context width                  [fstcomposecontext]
    HCLGa = min(rm_disambig(det_log(Ha o CLG)))                   [make-h-transducer, fstrmsymbols]
    HCLG  = add_self_loops(HCLGa, self_loop_scale, reorder)       [add-self-loops]
The input labels of HCLG are transition ids, the output labels word ids of ``words.txt``.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kaldi_hmm_gmm as khg
import kaldifst

from asr_kd.align.model import load_model
from asr_kd.config import RecipeConfig
from asr_kd.data.lang import load_lang
from asr_kd.data.manifest import Utterance, iter_manifest, read_manifest
from asr_kd.data.vocab import decoding_vocabulary, manifest_words, open_text, oov_counts
from asr_kd.decoding import lm
from asr_kd.fileio import atomic_open, atomic_path, file_sha256, read_json, write_json
from asr_kd.files import GraphDir
from asr_kd.paths import RunPaths
from asr_kd.errors import InputError
from asr_kd.runner import marker_summary

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GraphInputs:
    """What HCLG is built from (all in memory)."""

    l_disambig: kaldifst.StdVectorFst  # phones -> words, with #k disambiguation symbols
    disambig_phones: tuple[int, ...]  # ids of #0..#N in phones.txt
    words_txt: Path  # symbol table the ARPA words are mapped with
    trans_model: Any  # kaldi_hmm_gmm.TransitionModel
    ctx_dep: Any  # kaldi_hmm_gmm.ContextDependency
    self_loop_scale: float = 0.1
    transition_scale: float = 1.0


MAX_STATES_FOR_ARC_COUNT = 2_000_000  # arcs are counted in Python: skipped (None) beyond this


def fst_size(fst: kaldifst.StdVectorFst) -> dict[str, int | None]:
    """States and arcs of an FST (arcs None for very large FSTs)."""
    if fst.num_states > MAX_STATES_FOR_ARC_COUNT:
        return {"states": fst.num_states, "arcs": None}
    arcs = sum(fst.num_arcs(s) for s in kaldifst.StateIterator(fst))
    return {"states": fst.num_states, "arcs": arcs}


def compile_g(arpa: str | Path, words_txt: str | Path) -> kaldifst.StdVectorFst:
    """G.fst from an ARPA LM: ``#0`` on back-off arcs, ``<s>``/``</s>`` as epsilon, ilabel-sorted.

    N-grams with words missing from ``words_txt`` are skipped by arpa2fst (with a warning).
    """
    import kaldilm  # imported late: importing it before kaldifst/kaldi_hmm_gmm can deadlock

    text = kaldilm.arpa2fst(
        input_arpa=str(arpa), disambig_symbol="#0", read_symbol_table=str(words_txt), max_arpa_warnings=5
    )
    g = kaldifst.compile(s=text, acceptor=False)
    kaldifst.arcsort(g, sort_type="ilabel")
    return g


def replace_ilabels_by_epsilon(fst: kaldifst.StdVectorFst, labels: Iterable[int]) -> int:
    """Set input labels in ``labels`` to 0 (epsilon), in place; returns how many arcs changed.

    Kaldi's ``fstrmsymbols``, arc by arc in Python: fine for small graphs and tests; large graphs
    go through :func:`remove_input_labels` (one composition in C++).
    """
    drop = set(labels)
    changed = 0
    for s in kaldifst.StateIterator(fst):
        arcs = [(a.ilabel, a.olabel, a.weight.value, a.nextstate) for a in kaldifst.ArcIterator(fst, s)]
        if not any(il in drop for il, *_ in arcs):
            continue
        fst.delete_arcs(s, len(arcs))
        for il, ol, w, nxt in arcs:
            if il in drop:
                changed += 1
                il = 0
            fst.add_arc(s, kaldifst.StdArc(il, ol, w, nxt))
    return changed


def remove_input_labels(fst: kaldifst.StdVectorFst, labels: Iterable[int], max_label: int) -> kaldifst.StdVectorFst:
    """A copy of ``fst`` whose input labels in ``labels`` are epsilon (Kaldi's ``fstrmsymbols``).

    Done as one composition R o fst with a one-state R that maps every other label 1..max_label to
    itself and reads epsilon where it writes a label to remove; the result has the same states and
    arcs as ``fst``. (A full ``rmepsilon`` afterwards can blow the graph up, so none is done.)
    """
    drop = set(labels)
    relabel = kaldifst.StdVectorFst()
    s = relabel.add_state()
    relabel.start = s
    relabel.set_final(s, 0.0)
    for label in range(1, max_label + 1):
        relabel.add_arc(s, kaldifst.StdArc(0 if label in drop else label, label, 0.0, s))
    kaldifst.arcsort(relabel, sort_type="olabel")
    return kaldifst.compose(relabel, fst)


def compose_lg(l_disambig: kaldifst.StdVectorFst, g: kaldifst.StdVectorFst) -> kaldifst.StdVectorFst:
    """det_log(L o G), minimised."""
    lg = kaldifst.compose(l_disambig, g)
    if kaldifst.determinize_star(lg, use_log=True):
        raise RuntimeError("determinizing LG stopped early (max states); the lexicon or LM is too large")
    kaldifst.minimize_encoded(lg)
    return lg


def build_hclg(inputs: GraphInputs, g: kaldifst.StdVectorFst) -> tuple[kaldifst.StdVectorFst, dict[str, Any]]:
    """HCLG from L_disambig, G, the tree and the transition model; returns (HCLG, sizes/timings)."""
    t0 = time.time()
    lg = compose_lg(inputs.l_disambig, g)
    clg, ilabels = kaldifst.compose_context(
        disambig_syms=list(inputs.disambig_phones),
        context_width=inputs.ctx_dep.context_width,
        central_position=inputs.ctx_dep.central_position,
        ifst=lg,
    )
    kaldifst.arcsort(clg, sort_type="ilabel")
    ha, disambig_tids = khg.get_h_transducer(
        ilabel_info=ilabels,
        ctx_dep=inputs.ctx_dep,
        trans_model=inputs.trans_model,
        config=khg.HTransducerConfig(transition_scale=inputs.transition_scale),
    )
    hclga = kaldifst.compose(ha, clg)
    if kaldifst.determinize_star(hclga, use_log=True):
        raise RuntimeError("determinizing HCLG stopped early (max states)")
    max_label = max([inputs.trans_model.num_transition_ids, *disambig_tids])
    hclga = remove_input_labels(hclga, disambig_tids, max_label)
    kaldifst.minimize_encoded(hclga)
    hclg = khg.add_self_loops(
        self_loop_scale=inputs.self_loop_scale,
        disambig_syms=[],
        reorder=True,
        trans_model=inputs.trans_model,
        ifst=hclga,
    )
    kaldifst.arcsort(hclg, sort_type="ilabel")
    info = {
        "G": fst_size(g),
        "LG": fst_size(lg),
        "CLG": fst_size(clg),
        "HCLG": fst_size(hclg),
        "context_width": inputs.ctx_dep.context_width,
        "disambig_transition_ids": len(disambig_tids),
        "build_s": round(time.time() - t0, 3),
    }
    log.info("HCLG: %d states, %d arcs (LG %d states, context width %d) in %.1f s",
             info["HCLG"]["states"], info["HCLG"]["arcs"], info["LG"]["states"],
             info["context_width"], info["build_s"])
    return hclg, info


# ---------------------------------------------------------------------------------------------
# Cached build in a graph directory
# ---------------------------------------------------------------------------------------------
def file_digest(path: str | Path) -> str:
    return file_sha256(path)[:16]


def graph_key(files: Iterable[str | Path], self_loop_scale: float, transition_scale: float) -> dict[str, Any]:
    """The cache key of a graph: content hashes of its input files and its scales."""
    return {
        "files": {Path(p).name: file_digest(p) for p in files},
        "self_loop_scale": self_loop_scale,
        "transition_scale": transition_scale,
    }


def make_graph(inputs: GraphInputs, arpa: Path, out_dir: Path, key_files: Iterable[str | Path],
               g_fst: Path | None = None, drop_words: set[str] | None = None) -> dict[str, Any]:
    """Write ``G.fst``, ``HCLG.fst`` and ``graph_info.json`` under ``out_dir`` unless cached there.

    ``key_files`` are the files the in-memory inputs came from (L_disambig.fst, tree, model); with
    the ARPA file they form the cache key. ``g_fst``: a G.fst already compiled from ``arpa`` (read
    instead of compiling the LM again). ``drop_words``: words of ``inputs.words_txt`` outside the
    decoding vocabulary (the LM has none of them, so neither has G), left out of the graph's
    ``words.txt`` (the others keep their ids). Returns the graph info (sizes, build time, cached flag).
    """
    out = GraphDir(out_dir)
    key = graph_key([*key_files, arpa], inputs.self_loop_scale, inputs.transition_scale)
    write_word_table(inputs.words_txt, out.words, drop_words or set())
    if out.info.exists() and out.hclg.exists():
        old = read_json(out.info)
        if old.get("key") == key:
            log.info("HCLG in %s is up to date (same lang, tree, model and LM): reusing it", out.root)
            return {**old, "cached": True}
    g = kaldifst.StdVectorFst.read(str(g_fst)) if g_fst else compile_g(arpa, inputs.words_txt)
    hclg, info = build_hclg(inputs, g)
    with atomic_path(out.g_fst) as tmp:
        g.write(str(tmp))
    with atomic_path(out.hclg) as tmp:
        hclg.write(str(tmp))
    info = {**info, "key": key}
    write_json(out.info, info)
    return {**info, "cached": False}


def write_word_table(src: Path, dst: Path, drop: set[str]) -> None:
    """The graph's ``words.txt``: ``src``'s lines but those of the words in ``drop``, ids unchanged."""
    with open(src, encoding="utf-8") as f, atomic_open(dst, "w", encoding="utf-8") as out:
        for line in f:
            parts = line.split()
            if parts and parts[0] not in drop:
                out.write(line)


def read_hclg(path: str | Path) -> kaldifst.StdVectorFst:
    """HCLG.fst as written by :func:`make_graph`; names the stage to run when it is missing."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} is missing; run the graph stage (--stage graph)")
    return kaldifst.StdVectorFst.read(str(path))


def read_word_symbols(words_txt: str | Path) -> dict[int, str]:
    """id -> word of a Kaldi ``words.txt``."""
    table: dict[int, str] = {}
    with open(words_txt, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2:
                raise ValueError(f"{words_txt}:{lineno}: expected 'word id', got {line.rstrip()!r}")
            table[int(parts[1])] = parts[0]
    return table


# ---------------------------------------------------------------------------------------------
# The graphs of a run (the graph stage)
# ---------------------------------------------------------------------------------------------
MAX_LM_TEXT_BYTES = 200 * 2**20  # beyond this the pure-Python estimator is too slow: supply an ARPA
LANG_SYMBOLS = frozenset({"<eps>", "#0", "<s>", "</s>"})  # words.txt symbols that are not words
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
    # Transcript words (dev/test) the LM does not hold: the aligner's only. Whatever symbol the LM has
    # (a Kaldi lang's <UNK> in a user ARPA) stays, as G may output it.
    drop = lang_words - in_graph - lm.unigram_scan(paths.lm_arpa)[0]
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
