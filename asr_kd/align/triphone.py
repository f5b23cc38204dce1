"""Tied-triphone GMM-HMM training on top of a monophone system (Kaldi's ``steps/train_deltas.sh``).

Steps, with the Kaldi tools they stand for:

1. tree statistics from the monophone alignments                  [acc-tree-stats]
2. questions (phone clustering and/or phonetic classes), roots,
   greedy likelihood splits to ``align.tri_leaves``, leaf merging   [cluster-phones, build-tree]
3. a transition model for the tree, one Gaussian per pdf from the
   pooled tree statistics                                           [gmm-init-model]
4. the monophone alignments rewritten for the triphone model      [convert-ali]
5. training graphs with context width 3, then Viterbi training
   with realignment and mixing up to ``align.tri_gaussians`` over
   ``align.tri_iters`` passes (:func:`asr_kd.align.viterbi.train`)    [compile-train-graphs, gmm-est, gmm-align]

:func:`train_triphone` runs them all and returns the model (whose ``ctx_dep`` is kaldi-hmm-gmm's
own ContextDependency, loaded from our Kaldi-format tree), the Python tree, the training history,
and the summary numbers for the align stage.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import kaldi_hmm_gmm as khg
import numpy as np

from asr_kd.align import tree as T
from asr_kd.align.model import GmmHmm, single_gaussian
from asr_kd.align.viterbi import TrainHistory, TrainOptions, compile_graphs, train
from asr_kd.config import AlignConfig
from asr_kd.data.lang import Lang

log = logging.getLogger(__name__)

MIN_VARIANCE = 1e-3


@dataclass
class TriphoneResult:
    model: GmmHmm
    tree: T.Tree
    history: TrainHistory
    summary: dict[str, Any] = field(default_factory=dict)


def tree_stats(model: GmmHmm, feats: Mapping[str, np.ndarray], alignments: Mapping[str, np.ndarray]) -> T.TreeStats:
    """Tree statistics of the aligned utterances under ``model``'s transition model."""
    table = T.transition_table(model.trans_model)
    return T.accumulate_tree_stats(((feats[u], alignments[u]) for u in sorted(alignments) if u in feats), table)


def build_triphone_tree(
    stats: T.TreeStats,
    phone_symbols: Mapping[int, str],
    silence_phones: Sequence[int],
    nonsilence_phones: Sequence[int],
    topo: Any,
    num_leaves: int,
    min_count: float = 50.0,
    merge_threshold: float = -1.0,
    question_source: str = "both",
) -> T.Tree:
    """Questions, roots (one per base phone, silence unsplit) and the greedy tree."""
    n_classes = list(topo.get_phone_to_num_pdf_classes())
    phones = sorted([*silence_phones, *nonsilence_phones])
    questions = T.make_questions(stats, phone_symbols, phones, max(n_classes[p] for p in phones), question_source)
    roots = T.default_roots(phone_symbols, nonsilence_phones, silence_phones, n_classes)
    cfg = T.TreeBuildConfig(num_leaves=num_leaves, min_count=min_count, merge_threshold=merge_threshold)
    tree = T.build_tree(stats, roots, questions, cfg)
    tree.info["num_phone_questions"] = len(questions.phone_sets)
    return tree


def init_model_from_tree(tree: T.Tree, topo: Any, stats: T.TreeStats) -> GmmHmm:
    """As ``gmm-init-model``: the tree's transition model and one Gaussian per pdf from its statistics.

    A pdf without statistics (a phone never aligned) gets the global mean and variance.
    """
    ctx_dep = T.tree_to_context_dependency(tree)
    trans_model = khg.TransitionModel(ctx_dep=ctx_dep, hmm_topo=topo)
    pdf = tree.compute_many(stats.keys)  # (M,)
    n = tree.num_pdfs
    count = np.bincount(pdf, weights=stats.count, minlength=n)  # (P,)
    sums = np.zeros((n, stats.dim))
    sumsq = np.zeros((n, stats.dim))
    np.add.at(sums, pdf, stats.sum)
    np.add.at(sumsq, pdf, stats.sumsq)
    total = count.sum()
    g_mean = sums.sum(0) / total
    g_var = sumsq.sum(0) / total - g_mean**2
    am = khg.AmDiagGmm()
    for p in range(n):
        if count[p] > 0:
            mean = sums[p] / count[p]
            var = np.maximum(sumsq[p] / count[p] - mean**2, MIN_VARIANCE)
        else:
            mean, var = g_mean, g_var
        am.add_pdf(single_gaussian(mean, var))
    empty = int((count == 0).sum())
    if empty:
        log.warning("%d of %d triphone pdfs have no data; they start from the global Gaussian", empty, n)
    return GmmHmm(ctx_dep=ctx_dep, trans_model=trans_model, am=am, topo=topo)


def _tuple_states(trans_model: Any) -> dict[tuple[int, int, int, int], int]:
    """(phone, hmm-state, forward pdf, self-loop pdf) -> transition state (1-based)."""
    return {tuple(t.__getstate__()): s for s, t in enumerate(trans_model.tuples, start=1)}


def convert_alignments(
    old: GmmHmm, new: GmmHmm, tree: T.Tree, alignments: Mapping[str, np.ndarray]
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """As ``convert-ali``: the same HMM-state paths, as transition ids of the tree's model.

    Each frame keeps its phone, HMM state and transition; its pdfs come from the tree with the
    frame's phone context. Returns converted alignments and utt -> reason for any that failed.
    """
    table = T.transition_table(old.trans_model)
    states = _tuple_states(new.trans_model)
    first_tid = np.asarray(new.trans_model.state2id, dtype=np.int64)
    topo = old.topo
    entries: dict[int, Any] = {}
    out: dict[str, np.ndarray] = {}
    failed: dict[str, str] = {}
    for utt, ali in alignments.items():
        ali = np.asarray(ali, dtype=np.int64)
        left, centre, right, _ = T.phone_contexts(ali, table)
        hmm = table.hmm_state[ali]
        fwd_cls = np.empty(len(ali), np.int32)
        loop_cls = np.empty(len(ali), np.int32)
        for p, h in set(zip(centre.tolist(), hmm.tolist())):
            entry = entries.setdefault(p, topo.topology_for_phone(p))
            m = (centre == p) & (hmm == h)
            fwd_cls[m], loop_cls[m] = entry[h].forward_pdf_class, entry[h].self_loop_pdf_class
        fwd = tree.compute_many(np.stack([left, centre, right, fwd_cls], 1))  # (T,)
        loop = tree.compute_many(np.stack([left, centre, right, loop_cls], 1))  # (T,)
        try:
            tstate = np.array([states[k] for k in zip(centre.tolist(), hmm.tolist(), fwd.tolist(), loop.tolist())])
        except KeyError as err:
            failed[utt] = f"no transition state {err} in the triphone model"
            continue
        out[utt] = (first_tid[tstate] + table.trans_index[ali]).astype(np.int32)
    return out, failed


def train_triphone(
    mono: GmmHmm,
    feats: Mapping[str, np.ndarray],
    mono_alignments: Mapping[str, np.ndarray],
    transcripts: Mapping[str, Sequence[int]],
    lex_fst: Any,
    disambig_phones: Sequence[int],
    phone_symbols: Mapping[int, str],
    silence_phones: Sequence[int],
    nonsilence_phones: Sequence[int],
    num_leaves: int,
    opts: TrainOptions,
    min_count: float = 50.0,
    merge_threshold: float = -1.0,
    question_source: str = "both",
) -> TriphoneResult:
    """Build the tree from the monophone alignments and train a tied-triphone system on it.

    ``opts`` carries the triphone passes (``num_iters``), the Gaussian target (``total_gaussians``),
    beams, silence boost and jobs. ``transcripts``: utt -> word ids (as for the monophone graphs).
    """
    t0 = time.time()
    stats = tree_stats(mono, feats, mono_alignments)
    t_stats = time.time() - t0
    tree = build_triphone_tree(stats, phone_symbols, silence_phones, nonsilence_phones, mono.topo, num_leaves,
                               min_count, merge_threshold, question_source)
    t_tree = time.time() - t0 - t_stats
    model = init_model_from_tree(tree, mono.topo, stats)
    phones = sorted([*silence_phones, *nonsilence_phones])
    checked = T.check_context_dependency(tree, model.ctx_dep, phones, list(mono.topo.get_phone_to_num_pdf_classes()))
    converted, convert_failed = convert_alignments(mono, model, tree, mono_alignments)
    graphs, graph_failed = compile_graphs(model, lex_fst, disambig_phones, transcripts)
    initial = {u: a for u, a in converted.items() if u in graphs}
    history = train(model, graphs, feats, opts, silence_phones, initial=initial)
    summary = {
        "context": "triphone",
        "num_pdfs": model.num_pdfs,
        "num_gaussians": model.num_gauss,
        "tree": {
            "num_leaves_before_merge": tree.info["num_leaves_before_merge"],
            "num_merged": tree.info["num_merged"],
            "num_phone_questions": tree.info["num_phone_questions"],
            "stats_events": len(stats),
            "stats_frames": stats.num_frames,
            "objf_per_frame": round(tree.info["objf_per_frame"], 4),
            "monophone_objf_per_frame": round(tree.info["monophone_objf_per_frame"], 4),
            "triphones_checked": checked,
            "stats_s": round(t_stats, 2),
            "build_s": round(t_tree, 2),
        },
        "tri_loglike_per_frame": [round(x, 4) for x in history.loglike_per_frame],
        "tri_realigned_at": history.realigned_at,
        "convert_failed": len(convert_failed),
        "graph_failed": len(graph_failed),
        "train_failed": len(history.failed),
        "tri_train_s": round(time.time() - t0, 1),
    }
    log.info("triphone system: %d pdfs, %d Gaussians, loglike/frame %s", model.num_pdfs, model.num_gauss,
             summary["tri_loglike_per_frame"][-1:] or "n/a")
    return TriphoneResult(model=model, tree=tree, history=history, summary=summary)


def triphone_options(cfg: AlignConfig, mono_opts: TrainOptions) -> TrainOptions:
    """The monophone options with the triphone passes and Gaussian target of ``cfg``."""
    return dataclasses.replace(mono_opts, num_iters=cfg.tri_iters, total_gaussians=cfg.tri_gaussians)


def train_triphone_from_config(
    mono: GmmHmm,
    feats: Mapping[str, np.ndarray],
    mono_alignments: Mapping[str, np.ndarray],
    texts: Mapping[str, Sequence[str]],
    lang: Lang,
    cfg: AlignConfig,
    mono_opts: TrainOptions,
) -> TriphoneResult:
    """:func:`train_triphone` with the align config's tree and triphone settings (for the align stage).

    ``texts``: utt -> transcript words of (at least) the aligned utterances; ``mono_opts``: the
    monophone training options (beams, silence boost, jobs are reused).
    """
    transcripts = {u: lang.word_ids(texts[u]) for u in mono_alignments}
    return train_triphone(
        mono, feats, mono_alignments, transcripts, lang.read_l_fst(), lang.disambig_phones, lang.phone_symbols,
        lang.silence_phones, lang.nonsilence_phones, num_leaves=cfg.tri_leaves,
        opts=triphone_options(cfg, mono_opts), min_count=cfg.tree_min_count,
        merge_threshold=cfg.tree_merge_threshold, question_source=cfg.tree_questions,
    )
