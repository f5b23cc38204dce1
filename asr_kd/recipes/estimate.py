"""What a run will cost, before it starts: each stage's wall time, disk and peak memory.

``python -m asr_kd.recipes.librispeech --preset P --estimate [--hours H] [--cores C] [--gpus G]``

The model, stage by stage: the *work* a stage does is counted in units that follow from the config
and the corpus alone (utterances, audio hours, frames x GMM passes, training FLOPs of the networks,
audio hours searched by the decoder, ...: :func:`work_units`); the seconds, bytes and memory per unit
come from one measured reference run, shipped with the package (``reference_costs.json``, written by
``benchmarks/bench_scale.py --write-costs``, stamped with the machine and commit it was measured on).
A prediction is the reference's cost per unit times the target's units, divided by the parallelism
the target has beyond the reference's (cores for process pools and torch threads; GPUs for the
networks' arithmetic, which is predicted from FLOPs at a stated share of the GPU's peak instead).

Peak memory is not proportional to the work: it is a bare process's (Python, torch, Lightning
imported) plus the reference's excess over that, grown as what the stage holds grows
(:func:`memory_drivers`: in-memory windows or a streamed loader's shuffle buffers, cached soft
targets, the networks with their Adam state, the aligner's features, the LM's n-grams).

What the model cannot know is said beside the figure: epochs under newbob are the cap (an upper
bound); the decoder's real-time factor is the reference graph's (a LibriSpeech HCLG is larger); the
graph stage scales with the LM's n-grams, counted from the LM text or ARPA header when they exist.
"""

from __future__ import annotations

import gzip
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from asr_kd.config import RecipeConfig

FRAMES_PER_HOUR = 360_000  # 10 ms shift
H100_BF16_DENSE_FLOPS = 989e12  # NVIDIA H100 SXM, dense bf16 tensor-core peak
DEFAULT_MFU = 0.4  # the share of that peak a GPU stage is assumed to reach until one is measured
COSTS_FILE = "reference_costs.json"
MAX_LM_TEXT_BYTES = 50_000_000

# LibriSpeech's subsets: (utterances, hours) as published with the corpus (Panayotov et al. 2015)
LIBRISPEECH_SUBSETS: dict[str, tuple[int, float]] = {
    "train-clean-100": (28_539, 100.6),
    "train-clean-360": (104_014, 363.6),
    "train-other-500": (148_688, 496.7),
    "dev-clean": (2_703, 5.4),
    "dev-other": (2_864, 5.3),
    "test-clean": (2_620, 5.4),
    "test-other": (2_939, 5.1),
}
STAGES_ON_GPU = ("teachers", "ensemble", "distill")  # the networks' arithmetic; decode's forward also


class EstimateError(ValueError):
    """The estimate cannot be made (a corpus of unknown size, no reference costs)."""


@dataclass(frozen=True)
class Split:
    utts: int
    hours: float

    @property
    def frames(self) -> float:
        return self.hours * FRAMES_PER_HOUR


@dataclass
class Corpus:
    """Utterances and audio hours per split (train, dev, test, then any extra test subsets)."""

    splits: dict[str, Split]
    source: str
    lm_ngrams: float | None = None  # distinct n-grams of the LM (None: not known before the run)

    def get(self, split: str) -> Split:
        return self.splits.get(split, Split(0, 0.0))

    @property
    def extra(self) -> list[str]:
        return [s for s in self.splits if s not in ("train", "dev", "test")]


@dataclass
class StageEstimate:
    stage: str
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    disk_mb: float
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# The corpus a config describes
# ---------------------------------------------------------------------------------------------
def corpus_of(cfg: RecipeConfig, costs: dict[str, Any], hours: float | None = None) -> Corpus:
    """The corpus ``cfg`` will read: the embedded synthetic corpus of ``data.synthetic_size`` (its
    utterance counts, the reference run's seconds per utterance), or LibriSpeech's subsets named by
    the config; ``hours`` replaces the training set's hours (utterances scaled alike)."""
    d = cfg.data
    if not d.root and not _librispeech(cfg):
        from asr_kd.stages.prepare import synthetic_seconds_per_utterance, synthetic_utterances

        # the reference run's corpus (template sentences), or the text's own measured lengths
        secs = synthetic_seconds_per_utterance(cfg) or costs["corpus"]["seconds_per_utterance"]
        splits = {split: Split(n, n * secs[split] / 3600) for split, n in synthetic_utterances(cfg).items()}
        source = f"embedded synthetic corpus, size {d.synthetic_size}" + (", books text" if d.synthetic_text == "books" else "")
    else:
        splits = {}
        names = {"train": d.train_subsets, "dev": d.dev_subsets, "test": d.test_subsets}
        for split, subsets in names.items():
            unknown = [s for s in subsets if s not in LIBRISPEECH_SUBSETS]
            if unknown and not (split == "train" and hours):
                raise EstimateError(f"{', '.join(unknown)}: not a LibriSpeech subset of known size; "
                                    "give the training hours with --hours H")
            known = [LIBRISPEECH_SUBSETS[s] for s in subsets if s in LIBRISPEECH_SUBSETS]
            splits[split] = Split(sum(u for u, _ in known), sum(h for _, h in known))
        for s in d.extra_test_subsets:
            if s in LIBRISPEECH_SUBSETS:
                splits[s] = Split(*LIBRISPEECH_SUBSETS[s])
        source = "LibriSpeech " + " + ".join(d.train_subsets)
    if hours is not None:
        train = splits["train"]
        per_utt = train.hours / train.utts if train.utts else 12.3 / 3600  # LibriSpeech's mean utterance
        splits["train"] = Split(max(1, round(hours / per_utt)), hours)
        source += f", training set set to {hours:g} h"
    return Corpus(splits, source, lm_ngrams=_lm_ngrams(cfg))


def _librispeech(cfg: RecipeConfig) -> bool:
    """Whether the config names LibriSpeech's subsets (the LibriSpeech presets)."""
    subsets = cfg.data.train_subsets
    return bool(subsets) and all(s in LIBRISPEECH_SUBSETS for s in subsets)


def _lm_ngrams(cfg: RecipeConfig) -> float | None:
    """Distinct n-grams of the LM the graph stage will build or read: the ARPA header's counts, or
    counted in the LM text when it exists already (None otherwise)."""
    arpa = cfg.decode.arpa
    if arpa and Path(arpa).is_file():
        total = 0
        opener = gzip.open if str(arpa).endswith(".gz") else open
        with opener(arpa, "rt", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("ngram ") and "=" in line:
                    total += int(line.split("=", 1)[1])
                elif line.startswith("\\1-grams:"):
                    break
        return float(total)
    text = _lm_text(cfg)
    if text is None:
        return None
    if text.stat().st_size > MAX_LM_TEXT_BYTES:  # LibriSpeech's 4 GB LM text: not counted here
        return None
    return float(count_ngrams(text, cfg.decode.lm_order))


def _lm_text(cfg: RecipeConfig) -> Path | None:
    d = cfg.data
    if d.lm_text:
        p = Path(d.lm_text)
        return p if p.is_file() else None
    if not d.root and not _librispeech(cfg):
        from asr_kd.stages.prepare import synthetic_lm_text

        p = synthetic_lm_text(cfg)
        return p if p.is_file() else None
    return None


def count_ngrams(path: Path, order: int) -> int:
    """Distinct 1..order-grams of a text file (one sentence a line, with <s> and </s>)."""
    seen: set[tuple[str, ...]] = set()
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            words = ["<s>", *line.split(), "</s>"]
            for n in range(1, order + 1):
                for i in range(len(words) - n + 1):
                    seen.add(tuple(words[i : i + n]))
    return len(seen)


# ---------------------------------------------------------------------------------------------
# Work per stage
# ---------------------------------------------------------------------------------------------
def num_pdfs_of(cfg: RecipeConfig, costs: dict[str, Any] | None = None) -> int:
    """The output layer's size: the tree's leaves after merging (the reference run's share of
    ``align.tri_leaves``), or the monophone system's states."""
    ref = (costs or {}).get("num_pdfs_per_leaf", 0.9)
    if cfg.align.context == "triphone":
        return max(1, round(cfg.align.tri_leaves * ref))
    return 3 * 40  # 3 states x ~40 phones


def _flops(cfg: RecipeConfig, num_pdfs: int, student: bool = False) -> tuple[float, float]:
    """(forward, training) matmul FLOPs per frame of one network of the config."""
    from asr_kd.nn.models import dnn_train_flops_per_frame

    m, dist = cfg.model, cfg.distill
    layers = (dist.student_hidden_layers or m.hidden_layers) if student else m.hidden_layers
    width = (dist.student_hidden_dim or m.hidden_dim) if student else m.hidden_dim
    input_dim = cfg.features.num_mel_bins * (m.left_context + 1 + m.right_context)
    dims = [input_dim] + [width] * layers + [num_pdfs]
    fwd = sum(2 * i * o for i, o in zip(dims[:-1], dims[1:]))
    return float(fwd), float(dnn_train_flops_per_frame(input_dim, layers, width, num_pdfs))


def _systems(cfg: RecipeConfig) -> dict[str, int]:
    """The networks the decode stage searches, by kind: teachers, ensemble, students, Table-5 runs."""
    t5 = 2 + cfg.distill.trains_baseline_100
    return {"teachers": cfg.teachers.num_teachers, "ensemble": 1, "students": len(cfg.distill.temperatures),
            "table5": t5}


def work_units(cfg: RecipeConfig, corpus: Corpus, num_pdfs: int) -> dict[str, dict[str, float]]:
    """Each stage's work as {term: units}; the first term is the stage's main unit (memory grows with it)."""
    tr, dv, te = corpus.get("train"), corpus.get("dev"), corpus.get("test")
    extra = [corpus.get(s) for s in corpus.extra]
    all_splits = [tr, dv, te, *extra]
    utts = sum(s.utts for s in all_splits)
    hours = sum(s.hours for s in all_splits)
    frames_all = tr.frames + dv.frames + te.frames
    a = cfg.align
    per_train_utt = tr.frames / tr.utts if tr.utts else 0.0
    mono_frames = (min(a.mono_utts, tr.utts) if a.mono_utts else tr.utts) * per_train_utt
    tri_frames = (min(a.tri_utts, tr.utts) if a.tri_utts else tr.utts) * per_train_utt
    fwd, train = _flops(cfg, num_pdfs)
    s_fwd, s_train = _flops(cfg, num_pdfs, student=True)
    k, epochs = cfg.teachers.num_teachers, cfg.train.max_epochs
    d = cfg.distill
    student_epochs = d.student_max_epochs or epochs
    subset_epochs = d.subset_max_epochs or epochs
    passes = d.subset_passes_per_epoch or max(1, round(1 / d.subset_fraction))
    subset_epoch_frames = tr.frames * d.subset_fraction * passes
    online = d.target_mode == "online"
    systems = _systems(cfg)
    t5 = systems["table5"]
    student_frames = len(d.temperatures) * student_epochs * tr.frames
    table5_frames = t5 * subset_epochs * subset_epoch_frames
    distill_flops = (student_frames + table5_frames) * s_train + (len(d.temperatures) * student_epochs
                                                                  + t5 * subset_epochs) * dv.frames * s_fwd
    if online:  # the frozen ensemble's forward in every student step (and soft_3's)
        distill_flops += (student_frames + subset_epochs * subset_epoch_frames) * k * fwd
    ensemble_frames = (tr.frames if d.target_mode in ("cached", "stored") else 0.0) + dv.frames + te.frames
    # decode: the first teacher and every non-teacher system search the dev tuning set at every scale;
    # the other teachers take teacher 0's scale when decode.teacher_scale == "first", the other
    # students the best one's when decode.student_scale == "best"; all search test once
    dev_tune_h = dv.hours * (min(cfg.decode.tune_max_utts, dv.utts) / dv.utts if cfg.decode.tune_max_utts and dv.utts
                             else 1.0)
    n_scales = len(cfg.decode.acoustic_scales)
    n_sys = k + 1 + len(d.temperatures) + t5
    tuned = (n_sys - (k - 1 if cfg.decode.teacher_scale == "first" else 0)
             - (len(d.temperatures) - 1 if cfg.decode.student_scale == "best" else 0))
    gmm = 1 + (a.context == "triphone" and cfg.decode.gmm_monophone)  # the GMM systems decoded
    search_h = tuned * dev_tune_h * n_scales + n_sys * te.hours + gmm * (dev_tune_h * len(cfg.decode.gmm_acoustic_scales)
                                                                        + te.hours)
    net_flops = 2 * k * fwd + (len(d.temperatures) + t5) * s_fwd  # the teachers, the ensemble (k nets), the rest
    decode_fwd = net_flops * (dv.frames * (min(cfg.decode.tune_max_utts, dv.utts) / dv.utts
                                           if cfg.decode.tune_max_utts and dv.utts else 1.0) + te.frames)
    extra_h = sum(s.hours for s in extra)
    return {
        "prepare": {"utterances": utts},
        "lang": {"once": 1.0},
        "features": {"audio_hours": hours},
        "align": {"frame_passes": a.mono_iters * mono_frames + frames_all + sum(s.frames for s in extra),
                  # a frame's cost grows with the Gaussians per tied state it is scored against
                  "tri_frame_passes": (a.tri_iters * tri_frames * a.tri_gaussians / a.tri_leaves
                                       if a.context == "triphone" else 0.0)},
        "shards": {"frames": frames_all},
        "teachers": {"train_flops": k * (epochs * (tr.frames * train + dv.frames * fwd)
                                         + (te.frames + min(cfg.train.eval_max_frames or tr.frames, tr.frames)) * fwd),
                     "train_windows": k * epochs * tr.frames},  # what the loaders deliver (costs nothing apart)
        "ensemble": {"forward_flops": k * fwd * ensemble_frames},
        "distill": {"train_flops": distill_flops, "train_windows": student_frames + table5_frames},
        "graph": {"lm_ngrams": corpus.lm_ngrams or 0.0},
        "decode": {"search_audio_hours": search_h, "forward_flops": decode_fwd},
        "conditions": {"search_audio_hours": n_sys * extra_h, "forward_flops": net_flops * extra_h * FRAMES_PER_HOUR},
        "export": {"once": 1.0},
        "report": {"once": 1.0},
    }


def disk_units(cfg: RecipeConfig, corpus: Corpus, num_pdfs: int) -> dict[str, float]:
    """What each stage's disk use grows with."""
    tr, dv, te = corpus.get("train"), corpus.get("dev"), corpus.get("test")
    frames_all = tr.frames + dv.frames + te.frames + sum(corpus.get(s).frames for s in corpus.extra)
    fwd, _ = _flops(cfg, num_pdfs)
    s_fwd, _ = _flops(cfg, num_pdfs, student=True)
    systems = _systems(cfg)
    stored = cfg.distill.target_mode == "stored"
    return {
        "prepare": sum(corpus.get(s).utts for s in corpus.splits),
        "lang": 1.0, "features": frames_all, "align": frames_all, "shards": frames_all,
        "teachers": systems["teachers"] * fwd,  # parameters ~ forward FLOPs / 2
        "ensemble": (tr.frames * len(cfg.distill.temperatures) * cfg.distill.targets_k) if stored else 1.0,
        "distill": (systems["students"] + systems["table5"]) * s_fwd,
        "graph": corpus.lm_ngrams or 0.0,
        "decode": sum(corpus.get(s).utts for s in corpus.splits if s != "train"),
        "conditions": sum(corpus.get(s).utts for s in corpus.extra),
        "export": 1.0,  # predicted apart: three model directories, each with the graph and its networks
        "report": 1.0,
    }


def memory_drivers(cfg: RecipeConfig, corpus: Corpus, num_pdfs: int) -> dict[str, float]:
    """What each stage holds in memory beyond a bare process, in bytes (or, for the graph and the
    decoders, LM n-grams): the in-memory training windows (float16 frames and their float32 copy),
    a streamed loader's shuffle buffers, cached dense soft targets, the networks' weights with their
    gradients and Adam state, the aligner's MFCC of what it holds. 0: the stage's memory does not
    grow with the corpus."""
    tr = corpus.get("train")
    per_utt = tr.frames / tr.utts if tr.utts else 0.0
    t = cfg.train
    if tr.frames <= t.in_memory_max_frames:
        held = tr.frames
    else:  # streamed: each worker's shuffle buffer
        held = t.shuffle_buffer_utts * per_utt * max(1, t.num_workers)
    frame_bytes = 40 * (2 + 4)
    fwd, _ = _flops(cfg, num_pdfs)
    weights = fwd / 2 * 16  # fp32 weights, gradients and Adam's two moments
    cached = tr.frames * num_pdfs * 2 if cfg.distill.target_mode == "cached" else 0.0
    a = cfg.align
    align_held = (min(a.chunk_utts * a.num_jobs, tr.utts) * per_utt if a.chunk_utts else tr.frames) * 39 * 4
    ngrams = corpus.lm_ngrams or 0.0
    return {"align": align_held, "teachers": held * frame_bytes + weights,
            "ensemble": held * frame_bytes + weights * cfg.teachers.num_teachers / 4,
            "distill": held * frame_bytes + weights + cached, "graph": ngrams, "decode": ngrams}


# ---------------------------------------------------------------------------------------------
# Reference costs and the prediction
# ---------------------------------------------------------------------------------------------
def load_costs(path: str | Path | None = None) -> dict[str, Any]:
    """The shipped reference costs (or those at ``path``)."""
    if path is None:
        text = resources.files("asr_kd").joinpath(COSTS_FILE).read_text(encoding="utf-8")
        return json.loads(text)
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _parallel(cfg: RecipeConfig, cores: int) -> dict[str, float]:
    """Workers each stage can keep busy: its process pool (bounded by the cores) or torch's threads."""
    return {"features": min(cfg.features.num_workers or 1, cores), "align": min(cfg.align.num_jobs, cores),
            "decode": min(cfg.decode.num_jobs, cores), "conditions": min(cfg.decode.num_jobs, cores),
            "threads": cores}


def _term_parallel(stage: str, term: str) -> str | None:
    if stage in ("features", "align"):
        return stage
    if term == "search_audio_hours":
        return stage
    if term.endswith("flops"):
        return "threads"
    return None


def predict(cfg: RecipeConfig, corpus: Corpus, costs: dict[str, Any], cores: int | None = None, gpus: int = 0,
            mfu: float = DEFAULT_MFU, stages: Sequence[str] | None = None) -> list[StageEstimate]:
    """Each stage's predicted wall time, CPU time, peak RSS and disk on ``cores`` cores and ``gpus`` GPUs."""
    cores = cores or os.cpu_count() or 1
    ref_cfg = _ref_config(costs)
    pdfs = num_pdfs_of(cfg, costs)
    units, disk = work_units(cfg, corpus, pdfs), disk_units(cfg, corpus, pdfs)
    mem = memory_drivers(cfg, corpus, pdfs)
    par, ref_par = _parallel(cfg, cores), _parallel(ref_cfg, costs["machine"]["cores"])
    gpu_flops = gpus * H100_BF16_DENSE_FLOPS * mfu
    out = []
    supply = loader_supply(cfg, costs)
    for stage in stages or list(costs["stages"]):
        ref = costs["stages"][stage]
        # the extra test sets are decoded as test is: the decode stage's costs per unit
        per_units = costs["stages"]["decode" if stage == "conditions" else stage]
        notes: list[str] = []
        wall, cpu = costs.get("startup_s", 0.0), costs.get("startup_cpu_s", 0.0)
        for term, n in units.get(stage, {}).items():
            if not n:
                continue
            per_unit = per_units["seconds_per_unit"].get(term)
            if per_unit is None:
                continue
            cpu_per_unit = per_units["cpu_seconds_per_unit"].get(term, per_unit)
            if term.endswith("flops") and gpus and (stage in STAGES_ON_GPU or term == "forward_flops"):
                devices = gpus if stage in ("teachers", "distill") else 1
                seconds = n / (gpu_flops / gpus * devices)
                if supply and stage in ("teachers", "distill"):  # a GPU waits for its loader
                    fed = units[stage]["train_windows"] / (supply * devices)
                    if fed > seconds:
                        notes.append(f"loader-bound: {seconds / fed:.0%} of the GPUs' arithmetic used")
                        seconds = fed
                wall += seconds
                cpu += seconds
                continue
            which = _term_parallel(stage, term)
            speedup = par[which] / ref_par[which] if which else 1.0
            wall += per_unit * n / speedup
            cpu += cpu_per_unit * n
        if stage == "graph" and not corpus.lm_ngrams:
            wall, cpu = ref["wall_s"], ref["cpu_s"]
            notes.append("LM size unknown before the run: the reference's time")
        # peak memory: a bare process plus what the stage holds, grown as its memory driver grows
        base = min(costs.get("startup_rss_mb", 0.0), ref["peak_rss_mb"])
        driver, ref_driver = mem.get(stage, 0.0), ref.get("memory_driver", 0.0)
        if stage in ("graph", "decode") and not corpus.lm_ngrams:
            driver = ref_driver  # the LM's size is not known before the run: the reference's
        rss = ref["peak_rss_mb"] if not ref_driver else base + (ref["peak_rss_mb"] - base) * driver / ref_driver
        disk_ratio = disk[stage] / ref["disk_units"] if ref.get("disk_units") else 1.0
        disk_mb = ref["disk_mb"] * disk_ratio if disk[stage] else ref["disk_mb"]
        if stage == "export":  # teacher 0, the ensemble, the best student: each a graph copy, weights twice
            graph = costs["stages"]["graph"]
            graph_mb = graph["disk_mb"] * (disk["graph"] / graph["disk_units"] if disk["graph"] else 1.0)
            fwd, _ = _flops(cfg, pdfs)
            disk_mb = 3 * graph_mb + (cfg.teachers.num_teachers + 2) * fwd / 2 * 4 * 2 / 2**20
        if stage in ("distill",) and (cfg.distill.lr_schedule or cfg.train.lr_schedule) == "newbob":
            notes.append("newbob: epochs at their cap (upper bound)")
        if stage == "teachers" and cfg.train.lr_schedule == "newbob":
            notes.append("newbob: epochs at their cap (upper bound)")
        if stage in ("decode", "conditions") and units[stage]["search_audio_hours"]:
            notes.append("search at the reference graph's real-time factor")
        if gpus and stage in STAGES_ON_GPU:
            notes.append(f"{gpus} GPU(s) at {mfu:.0%} of {H100_BF16_DENSE_FLOPS / 1e12:.0f} TFLOP/s")
        out.append(StageEstimate(stage, wall, cpu, rss, disk_mb, notes))
    return out


def _ref_config(costs: dict[str, Any]) -> RecipeConfig:
    from asr_kd.config import from_dict

    return from_dict(costs["config"])


def reference_costs(cfg: RecipeConfig, corpus: Corpus, measured: dict[str, dict[str, Any]], machine: dict[str, Any],
                    splits: dict[str, dict[str, float]] | None = None,
                    startup_s: float = 0.0, startup_cpu_s: float = 0.0,
                    startup_rss_mb: float = 0.0, num_pdfs: int | None = None) -> dict[str, Any]:
    """The costs file from one measured run: per stage, the measured wall/CPU seconds less the
    process start (``startup_s``: Python, torch and Lightning imported; paid once per stage, not
    per unit) split over the stage's terms (``splits``: the share of a stage's seconds each term
    took, where the stage reports it; else the first term takes all), divided by the run's units.
    Also kept: the corpus's seconds per utterance per split, and the run's tied states per
    ``align.tri_leaves`` (``num_pdfs``: what the run's tree has)."""
    pdfs = num_pdfs_of(cfg)
    units, disk = work_units(cfg, corpus, pdfs), disk_units(cfg, corpus, pdfs)
    mem = memory_drivers(cfg, corpus, pdfs)
    stages = {}
    for stage, m in measured.items():
        terms = {t: n for t, n in units.get(stage, {"once": 1.0}).items() if n}
        share = (splits or {}).get(stage) or {next(iter(terms), "once"): 1.0}
        stages[stage] = {
            "wall_s": m["wall_s"], "cpu_s": m["cpu_s"], "peak_rss_mb": m["peak_rss_mb"], "disk_mb": m["disk_mb"],
            "units": terms, "disk_units": disk.get(stage, 1.0),
            "seconds_per_unit": {t: max(m["wall_s"] - startup_s, 0.0) * share.get(t, 0.0) / n
                                 for t, n in terms.items()},
            "cpu_seconds_per_unit": {t: max(m["cpu_s"] - startup_cpu_s, 0.0) * share.get(t, 0.0) / n
                                     for t, n in terms.items()},
            "memory_driver": mem.get(stage, 0.0),
        }
    per_utt = {s: 3600 * sp.hours / sp.utts for s, sp in corpus.splits.items() if sp.utts}
    return {"machine": machine, "config": _config_dict(cfg),
            "corpus": {"seconds_per_utterance": per_utt, "measured_on": corpus.source},
            "startup_s": startup_s, "startup_cpu_s": startup_cpu_s, "startup_rss_mb": startup_rss_mb,
            "stages": stages,
            **({"num_pdfs_per_leaf": num_pdfs / cfg.align.tri_leaves} if num_pdfs else {})}


def _config_dict(cfg: RecipeConfig) -> dict[str, Any]:
    from asr_kd.config import to_dict

    return {"preset": cfg.preset, **to_dict(cfg)}


# ---------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------
def hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def loader_supply(cfg: RecipeConfig, costs: dict[str, Any]) -> float | None:
    """Training windows/s one device's loader delivers with the config's workers (measured per
    worker on the reference machine), or None where the costs carry no loader figure."""
    loader = costs.get("loader")
    if not loader:
        return None
    return loader["windows_per_s_per_worker"] * max(1, cfg.train.num_workers)




def loader_ratio(cfg: RecipeConfig, costs: dict[str, Any], gpus: int, mfu: float) -> tuple[float, float] | None:
    """(supply, demand) in windows/s for one training device: the loader's measured supply with the
    preset's workers, and one GPU's (or this CPU's) consumption from the model's training FLOPs."""
    supply = loader_supply(cfg, costs)
    if supply is None:
        return None
    pdfs = num_pdfs_of(cfg, costs)
    _, train = _flops(cfg, pdfs)
    if gpus:
        demand = H100_BF16_DENSE_FLOPS * mfu / train
    else:
        ref = costs["stages"]["teachers"]
        demand = 1.0 / (ref["seconds_per_unit"]["train_flops"] * train)
    return supply, demand


def render(cfg: RecipeConfig, corpus: Corpus, rows: list[StageEstimate], costs: dict[str, Any], cores: int,
           gpus: int, mfu: float) -> str:
    m = costs["machine"]
    lines = [
        f"estimate for preset {cfg.preset}: {corpus.source}",
        "  corpus: " + ", ".join(f"{s} {sp.hours:.1f} h / {sp.utts} utts" for s, sp in corpus.splits.items()),
        f"  target: {cores} CPU cores, {gpus} GPU(s)" + (f" (H100-class, {mfu:.0%} MFU)" if gpus else ""),
        f"  from the costs measured on {m['cpu']} ({m['cores']} cores), commit {m['commit']}, {m['date']}",
        "",
        f"{'stage':<11}{'wall':>10}{'peak RSS':>11}{'disk':>11}  notes",
    ]
    for r in rows:
        lines.append(f"{r.stage:<11}{hms(r.wall_s):>10}{r.peak_rss_mb / 1024:>9.1f} G{r.disk_mb / 1024:>9.2f} G  "
                     + "; ".join(r.notes))
    total = sum(r.wall_s for r in rows)
    lines.append(f"{'total':<11}{hms(total):>10}{max(r.peak_rss_mb for r in rows) / 1024:>9.1f} G"
                 f"{sum(r.disk_mb for r in rows) / 1024:>9.2f} G")
    ratio = loader_ratio(cfg, costs, gpus, mfu)
    if ratio:
        supply, demand = ratio
        who = f"one GPU at {mfu:.0%} MFU" if gpus else "this CPU's training step"
        lines.append(f"loader: supply {supply:,.0f} windows/s ({max(1, cfg.train.num_workers)} worker(s)) against "
                     f"{who} {demand:,.0f}/s: ratio {supply / demand:.2f}")
        frames = corpus.get("train").frames
        if gpus and supply < demand and frames > cfg.train.in_memory_max_frames:
            lines.append(f"  the GPUs wait for the streamed loader: --set train.in_memory_max_frames={math.ceil(frames):d} "
                         f"keeps the training set in memory ({frames * 80 / 2**30:.1f} GiB of float16 frames per rank) "
                         "and its windows are spliced on the GPU (not measured on a GPU yet)")
    return "\n".join(lines)


def growth_exponent(small: float, large: float, scale: float) -> float:
    """``b`` of cost ~ size^b, from costs at two sizes ``scale`` apart."""
    if small <= 0 or large <= 0 or scale <= 1:
        return math.nan
    return math.log(large / small) / math.log(scale)
