"""Decoding graphs: G from an ARPA LM and HCLG = H o C o L o G, as Kaldi's ``utils/mkgraph.sh``.

A graph directory (:class:`asr_kd.files.GraphDir`; the graph stage's ``<exp>/graph/``, written by
:mod:`asr_kd.stages._graph`): ``lm.arpa`` (estimated by
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

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kaldi_hmm_gmm as khg
import kaldifst

from asr_kd.errors import InputError
from asr_kd.fileio import atomic_open, atomic_path, file_sha256, read_json, write_json
from asr_kd.files import GraphDir

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


LANG_SYMBOLS = frozenset({"<eps>", "#0", "<s>", "</s>"})  # words.txt symbols that are not words
