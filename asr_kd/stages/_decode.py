"""The systems of a run and their decoding: every DNN system and GMM-HMM through its graph -> WER.

Owns ``<exp>/decode/`` (per system: ``summary.json``, ``test/utt_stats.json`` and per split the
scoring files of :mod:`asr_kd.decoding.scoring`; names in :mod:`asr_kd.paths`).
:func:`decode_systems` is the decode stage's work (:mod:`asr_kd.stages.decode`).

Systems decoded (names used in ``decode/`` and in the report):
    teacher-<k>      each of the K teachers (``decode.teachers=first``: teacher 0 only)
    ensemble         the K teachers' averaged posteriors (``distill.ensemble_mean``)
    distilled_T<T>   the student distilled at temperature T
    baseline_3, soft_3, baseline_100   the Table-5 runs (baseline_100 is teacher 0 unless the
                     distill stage trained its own)
    gmm              the GMM-HMM of the align stage (its pdfs are the DNN labels)
    gmm_mono         with align.context=triphone: the monophone GMM it was built from
                     (``decode.gmm_monophone``), through the monophone graph ``graph/mono``
Each DNN system: log-posteriors of the dev and test utterances (from the shards, features as in
training), test frame accuracy against the test alignments (speakers unseen in training), the
acoustic scale chosen on dev from ``decode.acoustic_scales`` by WER, then the test WER at that scale.
The GMM systems are chosen the same way from ``decode.gmm_acoustic_scales``.

"DnnSystem" here is the speech-recognition sense (a model decoded through a graph): :class:`DnnSystem`,
:class:`GmmSystem`. The Lightning modules that train a network are :mod:`asr_kd.nn.systems`.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from asr_kd.config import RecipeConfig
from asr_kd.decoding.scoring import score, write_scoring
from asr_kd.decoding.search import (
    Decoder,
    Hypothesis,
    PosteriorFn,
    SearchConfig,
    count_pdfs,
    hybrid_log_likelihoods,
    log_priors_from_counts,
)
from asr_kd.decoding.pool import Pending, Searcher, SearchPool
from asr_kd.decoding.receipts import SearchRecord, SplitReceipts, Tally, array_key, file_key, utt_digests
from asr_kd.decoding.stats import UttCounts
from asr_kd.fileio import read_json, write_json
from asr_kd.files import GMM_MODEL_FILE, TABLE5_RUNS, TrainRunDir
from asr_kd.paths import RunPaths
from asr_kd.progress import progress
from asr_kd.errors import InputError
from asr_kd.runner import marker_summary

log = logging.getLogger(__name__)

CHUNK_UTTS = 64  # utterances whose posteriors are held in memory at once (decode.chunk_utts)
FORWARD_BATCH_FRAMES = 8192  # frames (windows) per forward batch, across the utterances of a chunk
TUNE_SEED = 0  # the seeded draw of the dev utterances that choose the scale (decode.tune_draw=seeded)


# ---------------------------------------------------------------------------------------------
# Data: utterances of a split, with features, labels and transcripts
# ---------------------------------------------------------------------------------------------
@dataclass
class EvalSplit:
    """The dev or test utterances a system is evaluated on (from the shards)."""

    split: str
    utts: list[str]
    feats: dict[str, np.ndarray]  # (T, D) normalised as in training
    labels: dict[str, np.ndarray]  # (T,) pdf ids (alignments of the reference transcript)
    refs: dict[str, list[str]]


def read_split(paths: RunPaths, split: str, max_utts: int = 0) -> EvalSplit:
    """The utterances of ``split`` from its shards (the features the networks were trained on)."""
    from asr_kd.data.shards import iter_utterances, shard_urls

    data = EvalSplit(split, [], {}, {}, {})
    for rec in iter_utterances(shard_urls(paths.shard_index(split))):
        data.utts.append(rec.id)
        data.feats[rec.id] = rec.feats
        if rec.labels is not None:
            data.labels[rec.id] = rec.labels
        data.refs[rec.id] = rec.text.split()
        if max_utts and len(data.utts) >= max_utts:
            break
    if not data.utts:
        raise InputError(f"no utterances in the {split} shards ({paths.shard_index(split)}); re-run the shards stage")
    return data


def subset(data: EvalSplit, max_utts: int) -> EvalSplit:
    """The first ``max_utts`` utterances of ``data`` in shard order (0: all)."""
    if not max_utts or max_utts >= len(data.utts):
        return data
    return _keep(data, data.utts[:max_utts])


def tune_subset(data: EvalSplit, max_utts: int, draw: str = "first") -> EvalSplit:
    """The dev utterances that choose the acoustic scale (``decode.tune_max_utts``, 0: all):
    ``first``: the first ones in shard order; ``seeded``: a draw of ``TUNE_SEED`` from the ids in
    sorted order (the same subset on every run of the same dev set, spread over its speakers,
    where the first ones of a speaker-sorted set such as LibriSpeech's would be a few speakers),
    kept in shard order."""
    if not max_utts or max_utts >= len(data.utts):
        return data
    if draw == "first":
        return subset(data, max_utts)
    if draw != "seeded":
        raise ValueError(f"unknown draw {draw!r} (first, seeded)")
    ids = sorted(data.utts)
    picked = set(ids[i] for i in np.random.default_rng(TUNE_SEED).choice(len(ids), size=max_utts, replace=False))
    return _keep(data, [u for u in data.utts if u in picked])


def _keep(data: EvalSplit, keep: list[str]) -> EvalSplit:
    return EvalSplit(data.split, keep, {u: data.feats[u] for u in keep},
                     {u: data.labels[u] for u in keep if u in data.labels}, {u: data.refs[u] for u in keep})


def train_log_priors(paths: RunPaths, num_pdfs: int) -> np.ndarray:
    """log p(s) from the training alignments' pdf counts (``align/train/pdf.scp``)."""
    from asr_kd.data.scp import load_scp

    scp = paths.pdf_scp("train")
    if not scp.exists():
        raise InputError(f"{scp} is missing; run the align stage (--stage align)")
    table = load_scp(scp)
    counts = count_pdfs((np.asarray(table[k]) for k in table.keys()), num_pdfs)
    return log_priors_from_counts(counts)


# ---------------------------------------------------------------------------------------------
# One split of one system: posteriors once per chunk, searched at every scale by the pool
# ---------------------------------------------------------------------------------------------
BatchPosteriorFn = Callable[[Sequence[np.ndarray]], list[np.ndarray]]  # [feats (T, D)] -> [log p(s|x) (T, N)]


def per_utterance(fn: PosteriorFn) -> BatchPosteriorFn:
    """A batch posterior source from a per-utterance one (tests, simple models)."""
    return lambda feats: [fn(f) for f in feats]


@dataclass
class SplitResult:
    """Hypotheses of one split at each acoustic scale, and the frame accuracy counts."""

    hyps: dict[float, list[Hypothesis]]
    hits: int = 0
    frames: int = 0  # frames with labels (for frame accuracy)
    utt_frames: dict[str, tuple[int, int]] = field(default_factory=dict)  # utt -> (hits, frames)
    forward_s: float = 0.0
    search_s: float = 0.0  # search seconds of one process, summed over the utterances

    @property
    def frame_acc(self) -> float | None:
        return self.hits / self.frames if self.frames else None

    @classmethod
    def of(cls, rec: SearchRecord) -> SplitResult:
        hits, frames = (sum(v[i] for v in rec.utt_frames.values()) for i in (0, 1))
        search_s = sum(h.search_s for hs in rec.hyps.values() for h in hs)
        return cls(rec.hyps, hits, frames, rec.utt_frames, rec.forward_s, search_s)


def batches(items: Sequence[str], size: int) -> list[Sequence[str]]:
    """``items`` in consecutive batches of ``size`` (the last may be shorter)."""
    return [items[i : i + size] for i in range(0, len(items), size)]


# A chunk's preparation: its utterances -> (utt -> what the searcher takes, utt -> (hits, frames))
ChunkFn = Callable[[Sequence[str]], tuple[dict[str, Any], dict[str, tuple[int, int]]]]


def dnn_chunks(forward: BatchPosteriorFn, data: EvalSplit, log_prior: np.ndarray) -> ChunkFn:
    """The network's posteriors of a chunk (one batched forward), frame hits against the labels,
    and the unscaled pseudo log-likelihoods the searcher scales."""

    def prepare(chunk: Sequence[str]) -> tuple[dict[str, Any], dict[str, tuple[int, int]]]:
        lls, frames = {}, {}
        for u, lp in zip(chunk, forward([data.feats[u] for u in chunk])):
            lp = np.asarray(lp)  # (T, N)
            if u in data.labels and len(data.labels[u]) == len(lp):
                frames[u] = (int((lp.argmax(axis=1) == data.labels[u]).sum()), len(lp))
            lls[u] = hybrid_log_likelihoods(lp, log_prior)
        return lls, frames

    return prepare


@dataclass
class Search:
    """Where a system's splits are searched: the stage's pool, the pool's searcher (graph) to use,
    chunk size, and (optionally) the receipts a killed decode resumes from."""

    pool: SearchPool
    searcher: str
    chunk_utts: int = CHUNK_UTTS
    receipts: Callable[[EvalSplit, Sequence[float]], SplitReceipts | None] | None = None


def run_split(name: str, search: Search, data: EvalSplit, prepare: ChunkFn, scales: Sequence[float]) -> SplitResult:
    """Every utterance of ``data`` prepared once (in chunks, so memory stays bounded) and searched at
    every scale: the pool searches a chunk while the next one is prepared. Finished chunks (and a
    finished split) with a receipt of the same key are reused."""
    scales = tuple(scales)
    receipts = search.receipts(data, scales) if search.receipts else None
    done = receipts.finished() if receipts else None
    if done is not None:
        return SplitResult.of(done)
    total = SearchRecord({s: [] for s in scales})
    in_flight: deque[tuple[int, Sequence[str], Pending, SearchRecord]] = deque()

    def collect() -> None:
        i, utts, pending, rec = in_flight.popleft()
        for u, hyps in zip(utts, pending.get()):
            for s, h in zip(scales, hyps):
                rec.hyps[s].append(h)
        if receipts:
            receipts.write_chunk(i, rec)
        total.extend(rec)

    chunks = batches(data.utts, search.chunk_utts)
    for i, chunk in enumerate(progress(chunks, desc=f"{name} {data.split}", unit="chunk", leave=False)):
        rec = receipts.chunk(i) if receipts else None
        if rec is not None:
            while in_flight:  # keep the chunks in order
                collect()
            total.extend(rec)
            continue
        t0 = time.time()
        payload, frames = prepare(chunk)
        rec = SearchRecord({s: [] for s in scales}, frames, time.time() - t0)
        utts = [u for u in chunk if u in payload]
        pending = search.pool.submit([(search.searcher, u, payload[u], scales) for u in utts] if scales else [])
        del payload
        in_flight.append((i, utts, pending, rec))
        while len(in_flight) > 1:  # one chunk searched while the next is prepared
            collect()
    while in_flight:
        collect()
    if receipts:
        reused = receipts.tally.chunks_reused.get(receipts.where, 0)
        if reused:
            log.info("decode: %s: reused %d of %d chunks", receipts.where, reused, len(chunks))
        receipts.write(total)
    return SplitResult.of(total)


def best_scale(refs: dict[str, list[str]], hyps: dict[float, list[Hypothesis]]) -> tuple[float, dict[str, float]]:
    """The acoustic scale with the lowest WER (ties: the first in the grid), and WER per scale."""
    wer = {s: score(refs, {h.utt: h.words for h in hs})[0].wer for s, hs in hyps.items()}
    return min(wer, key=lambda s: (wer[s], list(wer).index(s))), {f"{s:g}": w for s, w in wer.items()}


def finish_system(name: str, paths: RunPaths, dev: EvalSplit, test: EvalSplit, dev_hyps: list[Hypothesis] | None,
                  test_hyps: list[Hypothesis], scale: float, dev_wer: dict[str, float],
                  search_s: float, scale_from: str | None = None) -> dict[str, Any]:
    """Write both splits' scoring files (dev's only when dev was searched); the common part of a
    system's summary."""
    dev_stats = None if dev_hyps is None else write_scoring(
        paths.decode_dir(name, "dev"), dev.refs, {h.utt: h.words for h in dev_hyps},
        title=f"{name} dev, acoustic scale {scale:g}")
    chosen = f"taken from {scale_from}" if scale_from else "chosen on dev"
    test_stats = write_scoring(paths.decode_dir(name, "test"), test.refs, {h.utt: h.words for h in test_hyps},
                               title=f"{name} test, acoustic scale {scale:g} ({chosen})")
    frames = sum(h.num_frames for h in test_hyps)
    return {
        "system": name,
        "acoustic_scale": scale,
        "acoustic_scale_from": scale_from or "dev",
        "dev_wer_by_scale": dev_wer,
        "dev": dev_stats.as_dict() if dev_stats else {},
        "test": test_stats.as_dict(),
        "wer": test_stats.wer,
        "failed_utts": sum(not h.ok for h in test_hyps),
        "search_rtf": search_s / max(frames * 0.01, 1e-9),  # search seconds per second of audio (10 ms frames)
    }


def decode_dnn(name: str, forward: BatchPosteriorFn, paths: RunPaths, search: Search, log_prior: np.ndarray,
               dev: EvalSplit, test: EvalSplit, scales: Sequence[float], params: int | None = None,
               scale_from: tuple[str, float] | None = None) -> dict[str, Any]:
    """One hybrid system: the acoustic scale chosen by dev WER, test decoded at it; frame accuracies.

    With ``scale_from = (system, scale)`` the scale is that system's: dev is only scored for frame
    accuracy (no search), test is decoded at it."""
    if scale_from is None:
        dev_res = run_split(name, search, dev, dnn_chunks(forward, dev, log_prior), scales)
        scale, dev_wer = best_scale(dev.refs, dev_res.hyps)
        dev_hyps = dev_res.hyps[scale]
    else:
        dev_res = run_split(name, search, dev, dnn_chunks(forward, dev, log_prior), [])
        scale, dev_wer, dev_hyps = scale_from[1], {}, None
    test_res = run_split(name, search, test, dnn_chunks(forward, test, log_prior), [scale])
    summary = finish_system(name, paths, dev, test, dev_hyps, test_res.hyps[scale], scale, dev_wer,
                            test_res.search_s, scale_from=scale_from[0] if scale_from else None)
    summary.update(kind="dnn", frame_acc=test_res.frame_acc, dev_frame_acc=dev_res.frame_acc, params=params,
                   forward_s=round(dev_res.forward_s + test_res.forward_s, 2))
    write_utt_counts(paths, name, test, test_res.hyps[scale], test_res.utt_frames)
    write_json(paths.decode_summary(name), summary)
    acc = "n/a" if summary["frame_acc"] is None else f"{100 * summary['frame_acc']:.1f}%"
    log.info("%s: test frame acc %s, test WER %.2f%% (scale %g)", name, acc, 100 * summary["wer"], scale)
    return summary


def write_utt_counts(paths: RunPaths, name: str, test: EvalSplit, hyps: list[Hypothesis],
                     utt_frames: dict[str, tuple[int, int]]) -> None:
    """Per test utterance: word errors, reference words, frame hits and frames (for the bootstrap)."""
    _, aligned = score(test.refs, {h.utt: h.words for h in hyps})
    frames = [utt_frames.get(a.utt, (0, 0)) for a in aligned]
    counts = UttCounts(tuple(a.utt for a in aligned), np.array([a.stats.errors for a in aligned]),
                       np.array([a.stats.ref_words for a in aligned]), np.array([f[0] for f in frames]),
                       np.array([f[1] for f in frames]))
    write_json(paths.decode_utt_counts(name), counts.to_json())


@dataclass(frozen=True)
class GmmSystem:
    """A GMM-HMM of the align stage and the graph it is decoded with."""

    name: str  # gmm (the final model: the labels' source) or gmm_mono (the monophone it started from)
    model_dir: Path
    graph_dir: Path
    context: str  # monophone | triphone


def gmm_systems(cfg: RecipeConfig, paths: RunPaths) -> list[GmmSystem]:
    """The align stage's final GMM-HMM, and with align.context=triphone its monophone system too
    (``decode.gmm_monophone``), whose graph the graph stage builds in ``graph/mono``."""
    context = marker_summary(paths, "align").get("context") or cfg.align.context
    out = [GmmSystem("gmm", paths.align, paths.graph, context)]
    if cfg.decode.gmm_monophone and context == "triphone" and paths.mono_mdl.exists():
        out.append(GmmSystem("gmm_mono", paths.mono_dir, paths.mono_graph, "monophone"))
    return out


def gmm_feature_mismatch(model_dim: int, feats: dict[str, np.ndarray]) -> str | None:
    """Why a GMM cannot be decoded on the recipe's GMM features, or None: an imported Kaldi model
    trained on transformed features (LDA+MLLT, fMLLR) has another dimension, and those transforms
    are Kaldi's, not the recipe's."""
    dim = next((int(f.shape[1]) for f in feats.values()), model_dim)
    if model_dim == dim:
        return None
    return f"its features are {model_dim}-dimensional, the recipe's MFCC + deltas {dim}-dimensional"


def gmm_eval_features(paths: RunPaths, dev: EvalSplit, test: EvalSplit) -> dict[str, np.ndarray]:
    """utt -> the GMMs' features (MFCC + deltas, per-speaker CMN) of the dev and test utterances."""
    from asr_kd.align.feats import gmm_features, read_mfcc

    feats: dict[str, np.ndarray] = {}
    for data in (dev, test):
        raw, missing = read_mfcc(paths.mfcc_scp(data.split), data.utts)
        if missing:
            log.warning("GMM decoding: %d %s utterances have no MFCCs (e.g. %s); they count as empty "
                        "hypotheses", len(missing), data.split, missing[0])
        feats.update(gmm_features(raw, {u: _speaker_of(paths, data.split, u) for u in raw}))
    return feats


def gmm_chunks(feats: dict[str, np.ndarray]) -> ChunkFn:
    """A GMM's chunk: its features (the searcher computes the likelihoods); no frame accuracy."""
    return lambda chunk: ({u: feats[u] for u in chunk if u in feats}, {})


def decode_gmm_system(system: GmmSystem, paths: RunPaths, model: Any, search: Search, dev: EvalSplit,
                      test: EvalSplit, feats: dict[str, np.ndarray], scales: Sequence[float]) -> dict[str, Any]:
    """One GMM-HMM of the align stage through its graph (``search.searcher``, a searcher of the
    pool over ``model``), on its own features (:func:`gmm_eval_features`)."""
    dev_res = run_split(system.name, search, dev, gmm_chunks(feats), scales)
    scale, dev_wer = best_scale(dev.refs, dev_res.hyps)
    test_res = run_split(system.name, search, test, gmm_chunks(feats), [scale])
    test_hyps = test_res.hyps[scale]
    summary = finish_system(system.name, paths, dev, test, dev_res.hyps[scale], test_hyps, scale, dev_wer,
                            test_res.search_s)
    summary.update(kind="gmm", context=system.context, num_pdfs=int(model.num_pdfs),
                   num_gaussians=int(model.num_gauss), frame_acc=None,
                   params=int(model.num_gauss) * (2 * model.dim + 1))
    write_utt_counts(paths, system.name, test, test_hyps, {})
    write_json(paths.decode_summary(system.name), summary)
    log.info("%s (%s, %d pdfs): test WER %.2f%% (scale %g)", system.name, system.context, model.num_pdfs,
             100 * summary["wer"], scale)
    return summary


_SPEAKERS: dict[tuple[str, str], dict[str, str]] = {}


def _speaker_of(paths: RunPaths, split: str, utt: str) -> str:
    from asr_kd.data.manifest import read_manifest

    key = (str(paths.root), split)
    if key not in _SPEAKERS:
        _SPEAKERS[key] = {u.id: u.speaker for u in read_manifest(paths.manifest(split))}
    return _SPEAKERS[key][utt]


# ---------------------------------------------------------------------------------------------
# The systems of a run
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DnnSystem:
    """A trained network of the run (or the K teachers as the ensemble), to decode under ``name``."""

    name: str
    model_files: tuple[Path, ...]  # one model, or the K teachers of the ensemble
    metrics: Path | None  # the training run's metrics.json (train frame accuracy, history)


def discover_systems(cfg: RecipeConfig, paths: RunPaths) -> list[DnnSystem]:
    """The trained systems of this run whose model files exist (missing ones are logged)."""
    teachers = [TrainRunDir(d) for d in paths.teacher_dirs(cfg.teachers.num_teachers)]
    systems: list[DnnSystem] = []
    for k, run in enumerate(teachers if cfg.decode.teachers == "all" else teachers[:1]):
        systems.append(DnnSystem(f"teacher-{k}", (run.model,), run.metrics))
    systems.append(DnnSystem("ensemble", tuple(r.model for r in teachers), None))
    for t in cfg.distill.temperatures:
        run = TrainRunDir(paths.student_dir(t))
        systems.append(DnnSystem(f"distilled_T{t:g}", (run.model,), run.metrics))
    for name in TABLE5_RUNS:
        run = TrainRunDir(paths.table5_dir(name))
        if cfg.distill.trains_table5_run(name):
            systems.append(DnnSystem(name, (run.model,), run.metrics))
    present = [s for s in systems if all(p.exists() for p in s.model_files)]
    for s in systems:
        if s not in present:
            log.warning("system %s: model file(s) missing (%s); not decoded", s.name,
                        ", ".join(str(p) for p in s.model_files if not p.exists()))
    return present


def forward_device(cfg: RecipeConfig) -> str:
    """Where the networks' forward runs: CUDA when there is a GPU (and ``train.accelerator`` does
    not say cpu), else the CPU."""
    import torch

    return "cuda" if cfg.train.accelerator != "cpu" and torch.cuda.is_available() else "cpu"


def posterior_fn(system: DnnSystem, cfg: RecipeConfig, device: str = "cpu",
                 batch_frames: int = FORWARD_BATCH_FRAMES) -> tuple[BatchPosteriorFn, int, str]:
    """(a chunk's feats [(T, D)] -> log-posteriors [(T, N)], parameter count of one model, the
    precision it runs in) for a system, its model on ``device``. The precision is
    ``train.precision`` for that device (:func:`asr_kd.nn.precision.inference_precision`: fp32
    where a preset's bf16 would be emulated)."""
    import torch

    from asr_kd.nn.ensemble import batch_log_posteriors, load_teachers
    from asr_kd.nn.models import count_parameters, load_model
    from asr_kd.nn.precision import inference_precision

    if len(system.model_files) > 1:
        model = load_teachers(system.model_files, cfg.distill.ensemble_mean)
        params = count_parameters(model) // len(system.model_files)
    else:
        model, _ = load_model(system.model_files[0])
        params = count_parameters(model)
    model = model.to(torch.device(device))
    left, right = cfg.model.left_context, cfg.model.right_context
    precision = inference_precision(cfg.train.precision, torch.device(device).type)

    def fn(feats: Sequence[np.ndarray]) -> list[np.ndarray]:
        lps = batch_log_posteriors(model, [torch.from_numpy(np.asarray(f, np.float32)) for f in feats], left, right,
                                   batch_frames=batch_frames, precision=precision)
        return [lp.numpy() for lp in lps]  # (T, N) each

    return fn, params, precision


def best_student(systems: Sequence[DnnSystem]) -> str | None:
    """The student best on dev frame accuracy (the one Table 1 reports), by its training metrics."""
    scored = [(read_json(s.metrics).get("dev_frame_acc"), s.name) for s in systems
              if s.name.startswith("distilled_T") and s.metrics is not None and s.metrics.exists()]
    scored = [(acc, name) for acc, name in scored if isinstance(acc, (int, float))]
    return max(scored)[1] if scored else None


def shared_scale(cfg: RecipeConfig, system: DnnSystem, done: dict[str, Any],
                 best: str | None = None) -> tuple[str, float] | None:
    """Whose dev-chosen scale ``system`` takes, if not its own: with ``decode.teacher_scale = "first"``
    teacher 0's for teachers 1..K-1; with ``decode.student_scale = "best"`` the best student's
    (``best``) for the other students."""
    d = cfg.decode
    if d.teacher_scale == "first" and system.name.startswith("teacher-") and "teacher-0" in done:
        return "teacher-0", done["teacher-0"]["acoustic_scale"]
    if (d.student_scale == "best" and system.name.startswith("distilled_T") and best in done
            and system.name != best):
        return best, done[best]["acoustic_scale"]
    return None


def decode_systems(cfg: RecipeConfig, paths: RunPaths) -> dict[str, Any]:
    """The decode stage's work: every system of the run through HCLG; returns WERs and frame accuracies.

    The graphs and GMMs are read first and one pool of ``decode.num_jobs`` search processes is
    forked with them (:mod:`asr_kd.decoding.pool`); then each network's posteriors are computed
    once per chunk of each split, batched, on the GPU when there is one, and searched at every
    scale by the pool; every finished split and chunk leaves a receipt (:mod:`asr_kd.decoding.receipts`)."""
    from asr_kd.align.model import load_model
    from asr_kd.decoding.search import read_hclg_decoder
    from asr_kd.files import GraphDir

    gmm = load_model(paths.align)
    search_cfg = SearchConfig.of(cfg.decode)
    decoder = read_hclg_decoder(paths.graph, gmm.trans_model, search_cfg)
    log_prior = train_log_priors(paths, gmm.num_pdfs)
    dev_all, test = read_split(paths, "dev"), read_split(paths, "test")
    dev = tune_subset(dev_all, cfg.decode.tune_max_utts, cfg.decode.tune_draw)
    scales = cfg.decode.acoustic_scales
    systems = discover_systems(cfg, paths)
    gmm_feats = gmm_eval_features(paths, dev, test)
    not_decoded: dict[str, str] = {}
    gmms: list[tuple[GmmSystem, Any, Decoder]] = []
    for gs in gmm_systems(cfg, paths):
        model = gmm if gs.name == "gmm" else load_model(gs.model_dir)
        problem = gmm_feature_mismatch(model.dim, gmm_feats)
        if problem:
            not_decoded[gs.name] = problem
            log.warning("%s (%s) not decoded: %s", gs.name, gs.model_dir, problem)
            continue
        gmms.append((gs, model, decoder if gs.name == "gmm" else read_hclg_decoder(gs.graph_dir, model.trans_model,
                                                                                      search_cfg)))

    # what every result depends on besides the model and the data: the graph, the priors, the search
    def graph_key(graph_dir: Path, mdl: Path) -> dict[str, Any]:
        g = GraphDir(graph_dir)
        return {"hclg": file_key(g.hclg), "words": file_key(g.words), "mdl": file_key(mdl),
                "search": search_cfg.record()}

    dnn_graph = {**graph_key(paths.graph, paths.final_mdl), "prior": array_key(log_prior)}
    tally = Tally()
    digests: dict[tuple[str, str], list[str]] = {}

    def receipts_for(system: str, identity: dict[str, Any], tables: str) -> Callable[..., SplitReceipts]:
        def make(data: EvalSplit, grid: Sequence[float]) -> SplitReceipts:
            if (tables, data.split) not in digests:
                arrays = (data.feats, data.labels) if tables == "dnn" else (gmm_feats,)
                digests[tables, data.split] = utt_digests(data.utts, *arrays)
            return SplitReceipts(paths.stage_dir("decode"), system, data.split, {**identity, "scales": list(grid)},
                                 digests[tables, data.split], cfg.decode.chunk_utts, tally)
        return make

    searchers: dict[str, Searcher] = {"dnn": decoder.decode_log_likelihoods}
    for gs, model, gdec in gmms:
        searchers[gs.name] = (lambda d, am: lambda u, f, s: d.decode_gmm(u, am, f, s))(gdec, model.am)
    device = forward_device(cfg)
    results: dict[str, Any] = {}
    precision = ""
    # forked before any network runs: the workers share the graphs and never hold a CUDA context
    best = best_student(systems) if cfg.decode.student_scale == "best" else None
    # the best student before the others, which take its scale (stable: every other system keeps its place)
    order = sorted(systems, key=lambda s: s.name.startswith("distilled_T") and s.name != best)
    with SearchPool(searchers, cfg.decode.num_jobs) as pool:
        for system in order:
            fn, params, precision = posterior_fn(system, cfg, device)
            identity = {"kind": "dnn", "models": [file_key(p) for p in system.model_files],
                        "context": [cfg.model.left_context, cfg.model.right_context], "precision": precision,
                        **({"mean": cfg.distill.ensemble_mean} if len(system.model_files) > 1 else {}),
                        "graph": dnn_graph}
            search = Search(pool, "dnn", cfg.decode.chunk_utts, receipts_for(system.name, identity, "dnn"))
            results[system.name] = decode_dnn(system.name, fn, paths, search, log_prior, dev, test, scales, params,
                                              scale_from=shared_scale(cfg, system, results, best))
            del fn
        results = {s.name: results[s.name] for s in systems}  # the systems' own order
        for gs, model, _ in gmms:
            identity = {"kind": "gmm", "model": file_key(gs.model_dir / GMM_MODEL_FILE),
                        "graph": graph_key(gs.graph_dir, gs.model_dir / GMM_MODEL_FILE)}
            search = Search(pool, gs.name, cfg.decode.chunk_utts, receipts_for(gs.name, identity, "gmm"))
            results[gs.name] = decode_gmm_system(gs, paths, model, search, dev, test, gmm_feats,
                                                 cfg.decode.gmm_acoustic_scales)
    log.info("%s", tally.line())
    # the receipts stay: a later re-run (--force decode, or one an upstream re-run triggers, e.g. a
    # student retrained at another hard-target weight) searches only the systems whose key changed
    return {
        "systems": {n: {k: r[k] for k in ("wer", "frame_acc", "acoustic_scale", "params", "failed_utts",
                                          "search_rtf")} for n, r in results.items()},
        "dev_utts_for_tuning": len(dev.utts),
        "test_utts": len(test.utts),
        "acoustic_scales": list(scales),
        "forward": {"device": device, "precision": precision, "search_processes": pool.jobs},
        # (system, split) results taken from an earlier run's receipts: their search_rtf is that run's
        "reused": sorted(tally.splits_reused),
        **({"gmm_not_decoded": not_decoded} if not_decoded else {}),
    }
