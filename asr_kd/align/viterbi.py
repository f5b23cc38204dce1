"""GMM-HMM training by Viterbi re-estimation: graphs, equal alignment, accumulation, update, realignment.

Each step is a function of a :class:`~asr_kd.align.model.GmmHmm` (context dependency, transition
model, AM), so the same loop trains the flat-start monophone system and any tied-triphone tree:

1. :func:`compile_graphs`: per-utterance training graphs (transition ids -> words) from the
   transcript and L.fst, with transition and self-loop scales 0 (Kaldi's compile-train-graphs);
   transition probabilities are added at alignment time.
2. :func:`equal_alignments`: flat start (Kaldi's align-equal-compiled).
3. :func:`accumulate`: ML statistics from alignments. The GMM E-step is vectorised with numpy
   per pdf (frame x Gaussian log-likelihoods, posteriors, zeroth/first/second order sums) and
   transition statistics are transition-id counts (np.bincount); both are identical to Kaldi's
   per-frame ``AccumulateForGmm`` / ``TransitionModel::Accumulate``.
4. :func:`update`: ML re-estimation of transitions (kaldi-hmm-gmm) and GMMs (numpy, Kaldi's
   MleDiagGmmUpdate rules: variance floor, low-count Gaussians removed), then mixing up to a
   Gaussian count (Kaldi's SplitByCount, with a seeded numpy RNG so training is reproducible;
   kaldi-hmm-gmm's ``split_by_count`` draws from an unseeded global generator). The library's
   ``AccumAmDiagGmm.get_acc`` returns a copy, so statistics cannot be loaded into its update.
5. :func:`realign`: Viterbi alignment with beam and retry beam, silence boosted.

Accumulation and alignment run over ``num_jobs`` processes (:func:`asr_kd.parallel.worker_map`,
fork: the model and data are inherited, results come back as numpy arrays); ``num_jobs=1`` runs in-process.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import kaldi_hmm_gmm as khg
import kaldifst
import numpy as np

from asr_kd.accounting import tally
from asr_kd.align.model import GmmHmm, boosted_am
from asr_kd.parallel import worker_map
from asr_kd.progress import progress as progress_bar

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainOptions:
    num_iters: int = 25
    total_gaussians: int = 1000
    beam: float = 10.0
    retry_beam: float = 40.0
    last_resort_beam: float = 0.0  # > 0: utterances failing at retry_beam are tried once more with it
    boost_silence: float = 1.0
    acoustic_scale: float = 0.1
    self_loop_scale: float = 0.1
    transition_scale: float = 1.0
    power: float = 0.25  # Gaussians per pdf grow as occupancy^power when mixing up
    perturb_factor: float = 0.01
    min_count: float = 20.0  # minimum occupancy per Gaussian when mixing up
    num_jobs: int = 1
    progress: bool = True


@dataclass
class Stats:
    """Sufficient statistics of one accumulation pass."""

    occ: list[np.ndarray]  # per pdf: (G,) float64
    x: list[np.ndarray]  # per pdf: (G, D) float64
    x2: list[np.ndarray]  # per pdf: (G, D) float64
    trans: np.ndarray  # (num_transition_ids + 1,) float64 counts
    loglike: float = 0.0
    frames: int = 0

    def add(self, other: Stats) -> None:
        for i in range(len(self.occ)):
            self.occ[i] += other.occ[i]
            self.x[i] += other.x[i]
            self.x2[i] += other.x2[i]
        self.trans += other.trans
        self.loglike += other.loglike
        self.frames += other.frames

    @property
    def pdf_occupancy(self) -> np.ndarray:
        return np.array([o.sum() for o in self.occ])  # (num_pdfs,)


@dataclass
class AlignResult:
    alignments: dict[str, np.ndarray] = field(default_factory=dict)  # utt -> (T,) int32 transition ids
    failed: dict[str, str] = field(default_factory=dict)  # utt -> reason
    retried: int = 0
    last_resort: int = 0  # aligned only with the last-resort beam
    loglike: float = 0.0  # total acoustic log-likelihood (unscaled) of the aligned frames
    frames: int = 0


# ------------------------------------------------------------------------------------------------
# Graphs and flat start
# ------------------------------------------------------------------------------------------------
def graph_compiler(model: GmmHmm, lex_fst: Any, disambig_phones: Sequence[int]) -> Any:
    """A khg.TrainingGraphCompiler with transition and self-loop scales 0 (as Kaldi's training graphs)."""
    kaldifst.arcsort(lex_fst, sort_type="olabel")
    opts = khg.TrainingGraphCompilerOptions(transition_scale=0.0, self_loop_scale=0.0)
    return khg.TrainingGraphCompiler(
        trans_model=model.trans_model, ctx_dep=model.ctx_dep, lex_fst=lex_fst,
        disambig_syms=list(disambig_phones), opts=opts,
    )


def compile_graphs(
    model: GmmHmm, lex_fst: Any, disambig_phones: Sequence[int], transcripts: Mapping[str, Sequence[int]]
) -> tuple[dict[str, Any], dict[str, str]]:
    """utt -> training graph for its word ids; and utt -> reason for those that failed."""
    compiler = graph_compiler(model, lex_fst, disambig_phones)
    graphs: dict[str, Any] = {}
    failed: dict[str, str] = {}
    for utt, word_ids in transcripts.items():
        fst = compiler.compile_graph_from_text(list(word_ids))
        if fst.num_states == 0:
            failed[utt] = "empty training graph"
        else:
            graphs[utt] = fst
    return graphs, failed


def equal_alignments(
    graphs: Mapping[str, Any], num_frames: Mapping[str, int], seed: int = 0
) -> AlignResult:
    """Flat start: a random path through each graph with frames split equally among its states."""
    result = AlignResult()
    for utt, graph in graphs.items():
        ok, path = kaldifst.equal_align(ifst=graph, length=num_frames[utt], rand_seed=seed, num_retries=10)
        if ok:
            ok, tids, _, _ = kaldifst.get_linear_symbol_sequence(path)
        if not ok:
            result.failed[utt] = f"equal alignment failed ({num_frames[utt]} frames too few for the transcript?)"
            continue
        result.alignments[utt] = np.asarray(tids, dtype=np.int32)
    return result


# ------------------------------------------------------------------------------------------------
# Parallel map over utterance chunks (fork: workers inherit _SHARED)
# ------------------------------------------------------------------------------------------------
_SHARED: dict[str, Any] = {}
# A worker process costs a fork and a copy of its statistics; below this many utterances per job
# it does not pay (measured on the smoke corpus: 40 utterances ran slower with 2 jobs than with 1).
MIN_UTTS_PER_JOB = 50


def split_evenly(items: Sequence[str], parts: int) -> list[list[str]]:
    """``items`` in at most ``parts`` consecutive chunks of (nearly) equal size."""
    size = max(1, -(-len(items) // parts))
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def _parallel_map(
    fn: Callable[[list[str]], Any], utts: Sequence[str], num_jobs: int, shared: dict[str, Any], desc: str,
    progress: bool,
) -> list[Any]:
    """Apply ``fn`` to chunks of ``utts`` in ``num_jobs`` forked processes; results in chunk order."""
    _SHARED.clear()
    _SHARED.update(shared)
    jobs = max(1, min(num_jobs, len(utts) // MIN_UTTS_PER_JOB))
    chunks = split_evenly(utts, jobs * 8 if jobs > 1 else max(1, len(utts) // 50 or 1))
    bar = progress_bar(total=len(utts), desc=desc, unit="utt", disable=not progress, leave=False)
    results: list[Any] = []
    try:
        for c, r in zip(chunks, worker_map(fn, chunks, jobs)):
            results.append(r)
            bar.update(len(c))
    finally:
        bar.close()
        _SHARED.clear()
    return results


# ------------------------------------------------------------------------------------------------
# Accumulation (E-step)
# ------------------------------------------------------------------------------------------------
def gmm_params(am: Any) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per pdf: gconsts (G,), means * inv_vars (G, D), inv_vars (G, D) as float64 arrays."""
    out = []
    for pdf in range(am.num_pdfs):
        g = am.get_pdf(pdf)
        out.append((np.asarray(g.gconsts, np.float64), np.asarray(g.means_invvars, np.float64),
                    np.asarray(g.inv_vars, np.float64)))
    return out


def _empty_stats(params: list[tuple[np.ndarray, np.ndarray, np.ndarray]], num_tids: int) -> Stats:
    return Stats(
        occ=[np.zeros(p[0].shape[0]) for p in params],
        x=[np.zeros_like(p[1]) for p in params],
        x2=[np.zeros_like(p[1]) for p in params],
        trans=np.zeros(num_tids + 1),
    )


def _accumulate_chunk(utts: list[str]) -> Stats:
    feats, alis = _SHARED["feats"], _SHARED["alignments"]
    params, tid2pdf = _SHARED["params"], _SHARED["tid2pdf"]
    stats = _empty_stats(params, len(tid2pdf) - 1)
    utts = [u for u in utts if u in alis]
    if not utts:
        return stats
    X = np.concatenate([feats[u] for u in utts]).astype(np.float64)  # (N, D)
    tids = np.concatenate([alis[u] for u in utts])  # (N,)
    stats.trans += np.bincount(tids, minlength=len(tid2pdf))
    pdfs = tid2pdf[tids]  # (N,)
    order = np.argsort(pdfs, kind="stable")
    bounds = np.searchsorted(pdfs[order], np.arange(len(params) + 1))
    for pdf in range(len(params)):
        rows = order[bounds[pdf] : bounds[pdf + 1]]
        if len(rows) == 0:
            continue
        x = X[rows]  # (n, D)
        gconst, mean_iv, iv = params[pdf]
        ll = gconst[None, :] + x @ mean_iv.T - 0.5 * (x * x) @ iv.T  # (n, G)
        top = ll.max(axis=1, keepdims=True)  # (n, 1)
        post = np.exp(ll - top)  # (n, G)
        norm = post.sum(axis=1, keepdims=True)  # (n, 1)
        post /= norm
        stats.loglike += float((top + np.log(norm)).sum())
        stats.occ[pdf] += post.sum(axis=0)
        stats.x[pdf] += post.T @ x
        stats.x2[pdf] += post.T @ (x * x)
    stats.frames += len(tids)
    return stats


def accumulate(
    model: GmmHmm, feats: Mapping[str, np.ndarray], alignments: Mapping[str, np.ndarray], num_jobs: int = 1,
    progress: bool = True,
) -> Stats:
    """ML statistics of ``model`` for the aligned utterances (GMM posteriors + transition counts)."""
    params = gmm_params(model.am)
    shared = {"feats": feats, "alignments": alignments, "params": params, "tid2pdf": model.tid2pdf()}
    total = _empty_stats(params, int(model.trans_model.num_transition_ids))
    for part in _parallel_map(_accumulate_chunk, sorted(alignments), num_jobs, shared, "accumulate", progress):
        total.add(part)
    return total


# ------------------------------------------------------------------------------------------------
# Update (M-step) and mixing up
# ------------------------------------------------------------------------------------------------
MIN_VARIANCE = 1e-3  # Kaldi's MleDiagGmmOptions default variance floor
MIN_WEIGHT = 1e-5


def ml_gmm(occ: np.ndarray, x: np.ndarray, x2: np.ndarray, old: Any, min_occupancy: float) -> Any:
    """ML re-estimate of one diagonal GMM from its statistics (Kaldi's MleDiagGmmUpdate).

    occ: (G,), x / x2: (G, D). Gaussians with occupancy <= ``min_occupancy`` (or a weight below
    MIN_WEIGHT) are removed; a GMM whose every Gaussian falls below is left unchanged.
    """
    keep = (occ > min_occupancy) & (occ / max(occ.sum(), 1e-300) > MIN_WEIGHT)  # (G,)
    if not keep.any():
        return old
    occ_k = occ[keep]  # (K,)
    mean = x[keep] / occ_k[:, None]  # (K, D)
    var = np.maximum(x2[keep] / occ_k[:, None] - mean * mean, MIN_VARIANCE)  # (K, D)
    gmm = khg.DiagGmm(nmix=int(keep.sum()), dim=x.shape[1])
    gmm.set_weights((occ_k / occ_k.sum()).astype(np.float32))
    gmm.set_invvars_and_means((1.0 / var).astype(np.float32), mean.astype(np.float32))
    gmm.compute_gconsts()
    return gmm


def update(
    model: GmmHmm, stats: Stats, target_gaussians: int, opts: TrainOptions, min_gaussian_occupancy: float = 10.0,
    seed: int = 0,
) -> dict[str, float]:
    """Re-estimate transitions and GMMs from ``stats`` (in place), then mix up towards the target
    (the means' perturbation is random with ``seed``)."""
    trans_impr, trans_count = model.trans_model.mle_update(
        stats.trans.reshape(-1, 1), khg.MleTransitionUpdateConfig()
    )
    am = khg.AmDiagGmm()
    for pdf in range(len(stats.occ)):
        am.add_pdf(ml_gmm(stats.occ[pdf], stats.x[pdf], stats.x2[pdf], model.am.get_pdf(pdf), min_gaussian_occupancy))
    model.am = am
    if target_gaussians > model.num_gauss:
        mix_up(model, stats.pdf_occupancy, target_gaussians, opts, seed=seed)
    return {"transition_impr_per_frame": trans_impr / max(trans_count, 1.0)}


def split_targets(occs: np.ndarray, current: np.ndarray, total: int, power: float, min_count: float) -> np.ndarray:
    """Gaussians per pdf for a total of ``total`` (Kaldi's GetSplitTargets): each extra Gaussian goes
    to the pdf with the largest occupancy^power / count, while occupancy / count stays >= min_count.

    occs, current: (num_pdfs,) -> (num_pdfs,) int, never below ``current``.
    """
    counts = np.ones(len(occs), dtype=np.int64)
    heap = [(-(occ**power), i) for i, occ in enumerate(occs) if occ / 2 >= min_count]
    heapq.heapify(heap)
    while heap and counts.sum() < total:
        _, i = heapq.heappop(heap)
        counts[i] += 1
        if occs[i] / (counts[i] + 1) >= min_count:
            heapq.heappush(heap, (-(occs[i] ** power) / counts[i], i))
    return np.maximum(counts, current)


def split_gmm(gmm: Any, target: int, perturb: float, rng: np.random.Generator) -> Any:
    """Split the heaviest Gaussian until there are ``target`` (Kaldi's DiagGmm::Split): the two halves
    share its weight and variance, and their means move by +-perturb * stddev * N(0, 1)."""
    weights = list(np.asarray(gmm.weights, np.float64))  # G
    inv_vars = [row for row in np.asarray(gmm.inv_vars, np.float64)]  # G x (D,)
    means = [row for row in np.asarray(gmm.means_invvars, np.float64) / np.asarray(gmm.inv_vars, np.float64)]
    while len(weights) < target:
        g = int(np.argmax(weights))
        shift = perturb * rng.standard_normal(len(means[g])) / np.sqrt(inv_vars[g])  # (D,)
        weights[g] /= 2
        weights.append(weights[g])
        inv_vars.append(inv_vars[g].copy())
        means.append(means[g] + shift)
        means[g] = means[g] - shift
    out = khg.DiagGmm(nmix=len(weights), dim=len(means[0]))
    out.set_weights(np.asarray(weights, np.float32))
    out.set_invvars_and_means(np.asarray(inv_vars, np.float32), np.asarray(means, np.float32))
    out.compute_gconsts()
    return out


def mix_up(model: GmmHmm, pdf_occ: np.ndarray, total: int, opts: TrainOptions, seed: int) -> None:
    """Grow the AM towards ``total`` Gaussians (as Kaldi's SplitByCount), reproducibly for a seed."""
    current = np.array([model.am.get_pdf(p).num_gauss for p in range(model.num_pdfs)])
    targets = split_targets(pdf_occ, current, total, opts.power, opts.min_count)
    am = khg.AmDiagGmm()
    for pdf in range(model.num_pdfs):
        gmm = model.am.get_pdf(pdf)
        if targets[pdf] > current[pdf]:
            gmm = split_gmm(gmm, int(targets[pdf]), opts.perturb_factor, np.random.default_rng([seed, pdf]))
        am.add_pdf(gmm)
    model.am = am


# ------------------------------------------------------------------------------------------------
# Viterbi realignment
# ------------------------------------------------------------------------------------------------
def _align_one(utt: str, beam: float, retry_beam: float) -> tuple[int, int, float, int, list[int]]:
    """Viterbi-align one utterance from _SHARED: (done, retried, loglike, frames, transition ids)."""
    tm, am, opts = _SHARED["trans_model"], _SHARED["am"], _SHARED["opts"]
    fst = _SHARED["graphs"][utt].copy()
    khg.add_transition_probs(trans_model=tm, disambig_syms=[], transition_scale=opts.transition_scale,
                             self_loop_scale=opts.self_loop_scale, fst=fst)
    decodable = khg.DecodableAmDiagGmmScaled(am=am, tm=tm, feats=_SHARED["feats"][utt], scale=opts.acoustic_scale)
    done, _err, retried, like, frames, ali, _words = khg.align_utterance_wrapper(
        config=khg.AlignConfig(beam=beam, retry_beam=retry_beam, careful=False), utt=utt,
        acoustic_scale=opts.acoustic_scale, fst=fst, decodable=decodable,
        num_done=0, num_error=0, num_retried=0, tot_like=0.0, frame_count=0,
    )
    return done, retried, like, frames, ali


def _align_chunk(utts: list[str]) -> AlignResult:
    opts: TrainOptions = _SHARED["opts"]
    result = AlignResult()
    for utt in utts:
        num_frames = _SHARED["feats"][utt].shape[0]
        done, retried, like, frames, ali = _align_one(utt, opts.beam, opts.retry_beam)
        result.retried += retried
        if done != 1 and opts.last_resort_beam > 0:
            done, _, like, frames, ali = _align_one(utt, opts.last_resort_beam, 0.0)
            result.last_resort += int(done == 1)
        if done != 1 or len(ali) != num_frames:
            beam = max(opts.retry_beam, opts.last_resort_beam)
            result.failed[utt] = f"no alignment within beam {beam:g}"
            continue
        result.alignments[utt] = np.asarray(ali, dtype=np.int32)
        result.loglike += like  # Kaldi reports it unscaled
        result.frames += frames
    return result


def realign(
    model: GmmHmm, graphs: Mapping[str, Any], feats: Mapping[str, np.ndarray], opts: TrainOptions,
    silence_phones: Sequence[int], utts: Iterable[str] | None = None, desc: str = "align",
) -> AlignResult:
    """Viterbi-align ``utts`` (default: every graph) with ``model``; silence boosted by opts.boost_silence."""
    ids = sorted(utts if utts is not None else graphs)
    shared = {
        "graphs": graphs, "feats": feats, "trans_model": model.trans_model, "opts": opts,
        "am": boosted_am(model, list(silence_phones), opts.boost_silence),
    }
    total = AlignResult()
    for part in _parallel_map(_align_chunk, ids, opts.num_jobs, shared, desc, opts.progress):
        total.alignments.update(part.alignments)
        total.failed.update(part.failed)
        total.retried += part.retried
        total.last_resort += part.last_resort
        total.loglike += part.loglike
        total.frames += part.frames
    return total


# ------------------------------------------------------------------------------------------------
# The training loop
# ------------------------------------------------------------------------------------------------
def realign_iterations(num_iters: int) -> set[int]:
    """Kaldi's schedule scaled to ``num_iters``: every pass to 10, every 2nd to 20, then every 3rd."""
    its = set(range(1, min(num_iters, 11)))
    its |= set(range(12, min(num_iters, 21), 2))
    its |= set(range(23, num_iters, 3))
    return its


@dataclass
class TrainHistory:
    loglike_per_frame: list[float] = field(default_factory=list)  # per pass, before its update
    num_gaussians: list[int] = field(default_factory=list)  # after each pass's update
    realigned_at: list[int] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # utterances without a current alignment
    alignments: dict[str, np.ndarray] = field(default_factory=dict)


def train(
    model: GmmHmm, graphs: Mapping[str, Any], feats: Mapping[str, np.ndarray], opts: TrainOptions,
    silence_phones: Sequence[int], initial: Mapping[str, np.ndarray] | None = None,
) -> TrainHistory:
    """Viterbi training of ``model`` in place: pass 0 on ``initial`` (default: equal alignment),
    then ``opts.num_iters - 1`` passes, realigning on :func:`realign_iterations`, mixing up
    linearly to ``opts.total_gaussians`` over the first 3/4 of the passes."""
    hist = TrainHistory()
    if initial is None:
        flat = equal_alignments(graphs, {u: feats[u].shape[0] for u in graphs})
        alignments, hist.failed = dict(flat.alignments), dict(flat.failed)
    else:
        alignments = dict(initial)
    if not alignments:
        raise RuntimeError("no utterance could be aligned for training (all equal alignments failed)")
    max_iter_inc = max(1, int(0.75 * opts.num_iters))
    num_gauss = model.num_gauss
    inc = max(0, (opts.total_gaussians - num_gauss) // max_iter_inc)
    schedule = realign_iterations(opts.num_iters)
    for it in range(opts.num_iters):
        if it in schedule:
            res = realign(model, graphs, feats, opts, silence_phones, desc=f"align pass {it}")
            for utt in res.alignments:
                alignments[utt] = res.alignments[utt]
            for utt in res.failed:
                alignments.pop(utt, None)
            hist.failed = dict(res.failed)
            hist.realigned_at.append(it)
        stats = accumulate(model, feats, alignments, opts.num_jobs, opts.progress)
        hist.loglike_per_frame.append(stats.loglike / max(stats.frames, 1))
        update(model, stats, num_gauss, opts, min_gaussian_occupancy=3.0 if it == 0 else 10.0, seed=it)
        hist.num_gaussians.append(model.num_gauss)
        log.info("pass %d: loglike/frame %.3f over %d frames, %d Gaussians%s", it, hist.loglike_per_frame[-1],
                 stats.frames, model.num_gauss, " (realigned)" if it in schedule else "")
        if it < max_iter_inc:
            num_gauss += inc
    hist.alignments = alignments
    return hist


# ------------------------------------------------------------------------------------------------
# Failures, by reason (failed.txt messages -> the loss account of the align stage)
# ------------------------------------------------------------------------------------------------
NO_FEATURES = "no features in mfcc.scp"  # lost (and counted) by the features stage
# Failure messages (failed.txt) -> the loss reason counted in the summary, by message prefix.
FAILURE_REASONS = (
    ("word ", "word_not_in_words_txt"),
    ("empty training graph", "empty_training_graph"),
    ("equal alignment failed", "too_few_frames"),
    ("no alignment within beam", "no_alignment_within_beam"),
    ("no Kaldi alignment", "no_kaldi_alignment"),
    ("transition ids outside", "bad_transition_ids"),
)


def loss_reason(message: str) -> str | None:
    """The loss reason of an alignment failure (None: no features, counted by the features stage)."""
    if message == NO_FEATURES:
        return None
    for prefix, reason in FAILURE_REASONS:
        if message.startswith(prefix):
            return reason
    return "length_mismatch" if "labels for" in message else "align_failed"


def lost(failed: dict[str, str]) -> dict[str, Any]:
    """The align stage's own losses of a split, by reason (``{"counts", "examples"}``)."""
    items = ((loss_reason(msg), f"{utt}: {msg}") for utt, msg in sorted(failed.items()))
    return tally((reason, name) for reason, name in items if reason is not None)
