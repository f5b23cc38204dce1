"""The training runs of the recipe: which runs the ``teachers``, ``ensemble`` and ``distill``
stages make, with what keys, on what data (the stages, :mod:`asr_kd.stages.teachers` etc., call
:func:`train_teachers`, :func:`evaluate_ensemble` and :func:`train_students`).

* teachers: K AcousticDNNs differing only by their seed (``teachers.seed_base + k``), each in
  ``teachers/teacher-k/`` with its own done marker (a killed stage resumes at the first unfinished
  teacher, inside it at ``last.ckpt``). ``teachers.stacked=true`` trains all K in one batched
  model (``teachers/stacked/``) and then writes each member to its teacher directory;
  ``teachers.only=k`` trains teacher k alone (one task of a cluster job array).
* ensemble: the K teachers stacked into one frozen model; its dev/test frame accuracy beside each
  teacher's.
* distill: one student per temperature (``distill.temperatures``, hard-target weight
  ``distill.hard_weight``), and the paper's Table-5 runs: ``baseline_100`` (hard targets, all
  data), ``baseline_3`` (hard targets on ``distill.subset_fraction`` of the training utterances,
  early stopping on dev), ``soft_3`` (the same subset, soft targets from the full-data ensemble).

Each returns the JSON summary the stage stores in its marker.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
import logging
import shutil
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from asr_kd.config import ModelConfig, RecipeConfig, TrainConfig, to_dict, train_work
from asr_kd.data.datamodule import FrameDataModule, shard_datamodule
from asr_kd.data.windows import InMemoryWindows
from asr_kd.fileio import read_json, write_json
from asr_kd.nn.ensemble import Ensemble, cache_targets, frame_accuracy, load_teachers
from asr_kd.nn.models import AcousticDNN, StackedDNN, dnn_parameter_count
from asr_kd.nn.systems import DistillSystem, TeacherSystem
from asr_kd.nn.target_sources import CachedTargets, OnlineTargets, SoftTargets, StoredTargets
from asr_kd.nn.train import run_finished, train_run
from asr_kd.parallel import barrier, global_rank, rank_and_world
from asr_kd.files import SPLITS, TrainRunDir
from asr_kd.paths import RunPaths
from asr_kd.stages import _legacy_keys as legacy
from asr_kd.work import ADDED, Keyed, key as work_key
from asr_kd.errors import InputError
from asr_kd.runner import StageIncomplete

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------
def num_pdfs(paths: RunPaths) -> int:
    from asr_kd.data.shards import read_index

    n = read_index(paths.shard_index("train")).get("num_pdfs")
    if not n:
        raise InputError(f"{paths.shard_index('train')} has no num_pdfs (training shards without labels?); "
                         "re-run the align and shards stages")
    return int(n)


def data_key(paths: RunPaths) -> str:
    """Identity of the shards a run reads (their index files), so new shards retrain."""
    return work_key({s: read_json(paths.shard_index(s)) for s in SPLITS})


def teacher_seeds(cfg: RecipeConfig) -> list[int]:
    return [cfg.teachers.seed_base + k for k in range(cfg.teachers.num_teachers)]


def arch(cfg: RecipeConfig, pdfs: int, student: bool = False) -> dict[str, Any]:
    m = cfg.model
    layers, dim = m.hidden_layers, m.hidden_dim
    if student:
        layers = cfg.distill.student_hidden_layers or layers
        dim = cfg.distill.student_hidden_dim or dim
    return {"input_dim": (m.left_context + 1 + m.right_context) * cfg.features.num_mel_bins,
            "hidden_layers": layers, "hidden_dim": dim, "num_pdfs": pdfs, "dropout": m.dropout}


def _params(a: dict[str, Any]) -> int:
    return dnn_parameter_count(a["input_dim"], a["hidden_layers"], a["hidden_dim"], a["num_pdfs"])


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _split_metrics(m: dict[str, Any], k: int | None = None) -> dict[str, Any]:
    """{'dev': {'frame_acc': ..}, 'test': .., 'train': ..} from a run's metrics (member k if stacked)."""
    out = {}
    for split in ("dev", "test", "train"):
        v = m.get(f"{split}_frame_acc")
        if v is not None:
            out[split] = {"frame_acc": v[k] if k is not None else v}
    return out


def _curve(m: dict[str, Any]) -> list[dict[str, Any]]:
    keep = ("epoch", "train_loss", "train_frame_acc_running", "dev_frame_acc", "lr")
    return [{key: row[key] for key in keep if key in row} for row in m.get("history", [])]


# ---------------------------------------------------------------------------------------------
# teachers
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TeacherRun:
    """What one teacher's result depends on: its run key (:mod:`asr_kd.work`)."""

    model: ModelConfig
    train: TrainConfig  # as results depend on it: config.train_work
    seed: int
    stacked: bool
    data: str  # the shards: data_key


@dataclass(frozen=True)
class StackedRun:
    """The K teachers trained as one batched model."""

    seeds: tuple[int, ...]
    teacher: str  # the key of a member without its seed


def _teacher_key(cfg: RecipeConfig, paths: RunPaths, seed: int, data: str | None = None) -> Keyed:
    """``data``: the shards' key when the caller has it (:func:`data_key` reads every split's index)."""
    return Keyed.of(TeacherRun(cfg.model, train_work(cfg.train), seed, cfg.teachers.stacked, data or data_key(paths)))


def _train_one_teacher(cfg: RecipeConfig, paths: RunPaths, dm: FrameDataModule, k: int, pdfs: int) -> dict[str, Any]:
    seed = teacher_seeds(cfg)[k]
    model = AcousticDNN(**arch(cfg, pdfs), seed=seed)
    system = TeacherSystem(model, cfg.train, max_epochs=cfg.train.max_epochs, run_config=to_dict(cfg))
    log.info("teacher %d/%d (seed %d)", k + 1, cfg.teachers.num_teachers, seed)
    return train_run(system, dm, cfg.train, paths.teacher_dir(k), key=_teacher_key(cfg, paths, seed),
                     max_epochs=cfg.train.max_epochs, early_stopping_patience=cfg.train.early_stopping_patience,
                     model_extra={"teacher": k, "seed": seed})


def _train_stacked(cfg: RecipeConfig, paths: RunPaths, dm: FrameDataModule, pdfs: int) -> None:
    """All K teachers in one batched model; then each member goes to its teacher directory."""
    seeds = teacher_seeds(cfg)
    pending = [k for k, seed in enumerate(seeds)
               if not run_finished(paths.teacher_dir(k), _teacher_key(cfg, paths, seed))]
    if not pending:
        return
    model = StackedDNN(seeds, **arch(cfg, pdfs))
    system = TeacherSystem(model, cfg.train, max_epochs=cfg.train.max_epochs, run_config=to_dict(cfg))
    key = Keyed.of(StackedRun(tuple(seeds), _teacher_key(cfg, paths, -1).key))
    metrics = train_run(system, dm, cfg.train, paths.teachers_stacked_dir, key=key,
                        max_epochs=cfg.train.max_epochs, early_stopping_patience=cfg.train.early_stopping_patience)
    if global_rank() == 0:
        _write_members(paths, metrics, paths.teachers_stacked_dir,
                       [(paths.teacher_dir(k), _teacher_key(cfg, paths, seed)) for k, seed in enumerate(seeds)],
                       trained_in="stacked")
    barrier()  # every rank sees the members' runs finished


def _write_members(paths: RunPaths, metrics: dict[str, Any], stacked_dir: Path,
                   members: list[tuple[Path, Keyed]], trained_in: str) -> None:
    """Each member of a stacked run as a finished run in its own directory (``members``: its
    directory and run key, in member order)."""
    stacked = TrainRunDir(stacked_dir)
    for k, (member_dir, member_key) in enumerate(members):
        run = TrainRunDir(member_dir)
        run.root.mkdir(parents=True, exist_ok=True)
        write_json(run.key, member_key.stored())
        tmp = run.model.with_suffix(".pt.tmp")
        shutil.copyfile(stacked.member_model(k), tmp)
        tmp.replace(run.model)
        member = {key_: (v[k] if isinstance(v, list) and key_.endswith("frame_acc") else v)
                  for key_, v in metrics.items() if key_ != "history"}
        member["history"] = [{**row, "dev_frame_acc": row.get("dev_member_frame_acc", [row["dev_frame_acc"]] * len(members))[k]}
                             for row in metrics.get("history", [])]
        member["trained_in"] = trained_in
        write_json(run.metrics, member)
        write_json(run.done, {"from": str(stacked.root.relative_to(paths.root))})  # run-dir relative: movable


def train_teachers(cfg: RecipeConfig, paths: RunPaths) -> dict[str, Any]:
    """Train the K teachers (resumable per teacher); the summary lists each teacher with its
    dev/test frame accuracy."""
    K, only = cfg.teachers.num_teachers, cfg.teachers.only
    if only >= K:
        raise InputError(f"teachers.only={only} but teachers.num_teachers={K}")
    pdfs = num_pdfs(paths)
    dm = shard_datamodule(paths.shard_indexes(), cfg.model, cfg.train)
    if cfg.teachers.stacked and only < 0:
        _train_stacked(cfg, paths, dm, pdfs)
    else:
        for k in [only] if only >= 0 else range(K):
            _train_one_teacher(cfg, paths, dm, k, pdfs)
    seeds = teacher_seeds(cfg)
    missing = [k for k in range(K) if not run_finished(paths.teacher_dir(k), _teacher_key(cfg, paths, seeds[k]))]
    if missing:
        raise StageIncomplete(f"teacher {only} finished; teachers {missing} are not trained yet. The stage "
                              f"is complete once all {K} are: run the other teachers.only tasks, or the "
                              f"stage without teachers.only")
    return teachers_summary(cfg, paths, pdfs)


def teachers_summary(cfg: RecipeConfig, paths: RunPaths, pdfs: int) -> dict[str, Any]:
    teachers = []
    for k, seed in enumerate(teacher_seeds(cfg)):
        m = read_json(TrainRunDir(paths.teacher_dir(k)).metrics)
        row = {"teacher": k, "seed": seed, **_split_metrics(m), "epochs": m.get("epochs"),
               "best_epoch": m.get("best_epoch"), "wall_time_s": m.get("wall_time_s"),
               "trained_in": m.get("trained_in", "own run")}
        teachers.append(row)
    summary: dict[str, Any] = {"num_teachers": len(teachers), "num_pdfs": pdfs, "stacked": cfg.teachers.stacked,
                               "params": _params(arch(cfg, pdfs)), "teachers": teachers}
    for split in ("dev", "test"):
        accs = [t[split]["frame_acc"] for t in teachers if split in t]
        if accs:
            summary[f"{split}_frame_acc_mean"] = statistics.fmean(accs)
            summary[f"{split}_frame_acc_std"] = statistics.pstdev(accs)
    return summary


# ---------------------------------------------------------------------------------------------
# ensemble
# ---------------------------------------------------------------------------------------------
def load_ensemble(cfg: RecipeConfig, paths: RunPaths) -> Ensemble:
    files = [TrainRunDir(run_dir).model for run_dir in paths.teacher_dirs(cfg.teachers.num_teachers)]
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise InputError(f"teacher model files missing: {', '.join(missing)}; run the teachers stage")
    return load_teachers(files, cfg.distill.ensemble_mean)


def evaluate_ensemble(cfg: RecipeConfig, paths: RunPaths) -> dict[str, Any]:
    """The ensemble's dev/test frame accuracy beside its members' (one batched forward)."""
    ens = load_ensemble(cfg, paths).to(_device())
    dm = shard_datamodule(paths.shard_indexes(), cfg.model, cfg.train)
    summary: dict[str, Any] = {"num_teachers": ens.num_members, "mean": ens.mean}
    for split in ("dev", "test"):
        res = frame_accuracy(ens, dm.eval_loader(split), device=_device(), desc=f"ensemble {split}",
                             precision=cfg.train.precision)
        members = res["member_frame_acc"]
        summary[split] = {
            "frame_acc": res["frame_acc"], "frames": res["frames"],
            "teacher_frame_acc": members,
            "teacher_frame_acc_mean": statistics.fmean(members),
            "teacher_frame_acc_std": statistics.pstdev(members),
            "gain_over_mean_teacher": res["frame_acc"] - statistics.fmean(members),
        }
        log.info("ensemble %s frame acc %.4f (teachers %.4f +- %.4f)", split, res["frame_acc"],
                 summary[split]["teacher_frame_acc_mean"], summary[split]["teacher_frame_acc_std"])
    write_json(paths.ensemble_metrics, summary)
    return summary


# ---------------------------------------------------------------------------------------------
# distill
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Subset:
    """Table 5's share of the training data."""

    fraction: float
    unit: str
    seed: int


@dataclass(frozen=True)
class StudentRun:
    """What one run of the distill stage depends on: its run key (:mod:`asr_kd.work`). A student
    (``soft=True``: the ensemble's soft targets at ``T``, or its logits with ``matching_logits``)
    or a hard-target run (Table 5's baselines)."""

    model: ModelConfig
    train: TrainConfig  # the students' rule (student_train_config), as results depend on it
    hidden_layers: int  # the student's size
    hidden_dim: int
    max_epochs: int  # passes over its data
    val_every: int  # passes per dev check
    patience: int  # dev checks without gain before it stops (0: never)
    subset: Subset | None  # None: all the training data
    data: str  # the shards: data_key
    soft: bool
    teachers: tuple[str, ...] = ()  # with soft targets: the teachers' run keys
    ensemble_mean: str = ""
    targets: str = ""  # online | cached | stored
    targets_k: int = 0  # stored: the top k kept
    T: float = 0.0
    hard_weight: float = 1.0
    matching_logits: bool = False
    stacked_with: tuple[float, ...] = field(default=(), metadata=ADDED)  # distill.stacked: the stack's temperatures


@dataclass(frozen=True)
class StackedStudents:
    """The students of several temperatures trained as one batched model: their keys."""

    students: tuple[str, ...]


def _subset(cfg: RecipeConfig, subset: bool) -> Subset | None:
    d = cfg.distill
    return Subset(d.subset_fraction, d.subset_unit, d.subset_seed) if subset else None


def _hard_work(cfg: RecipeConfig, paths: RunPaths, *, max_epochs: int, patience: int, subset: bool) -> StudentRun:
    """A hard-target run's slice, which every run of the distill stage starts from; ``max_epochs``:
    dev checks."""
    train = student_train_config(cfg)
    a = arch(cfg, 0, student=True)
    period = subset_period(cfg) if subset else 1
    return StudentRun(cfg.model, train_work(train), a["hidden_layers"], a["hidden_dim"], max_epochs * period, period,
                      patience, _subset(cfg, subset), data_key(paths), soft=False)


def _student_key(cfg: RecipeConfig, paths: RunPaths, T: float, *, matching_logits: bool = False,
                 subset: bool = False, max_epochs: int | None = None) -> Keyed:
    """A student's key, as :func:`_distill_run` trains it with the same arguments."""
    d, train = cfg.distill, student_train_config(cfg)
    base = _hard_work(cfg, paths, max_epochs=max_epochs or train.max_epochs, patience=train.early_stopping_patience,
                      subset=subset)
    teachers = tuple(_teacher_key(cfg, paths, seed, base.data).key for seed in teacher_seeds(cfg))
    mode = d.target_mode
    work = dataclasses.replace(base, soft=True, teachers=teachers, ensemble_mean=d.ensemble_mean, targets=mode,
                               targets_k=d.targets_k if mode == "stored" else 0, T=float(T),
                               hard_weight=_hard_weight(cfg, subset), matching_logits=matching_logits,
                               stacked_with=_stacked_temperatures(cfg) if not (subset or matching_logits) else ())
    if work.stacked_with:  # no older asr-kd stacked students: a solo student's old key is not this work
        return Keyed.of(work)
    return Keyed.of(work, legacy=[legacy.distill_key(cfg, base.data, T=T, matching=matching_logits, subset=subset)])


def _stacked_temperatures(cfg: RecipeConfig) -> tuple[float, ...]:
    """The temperatures whose students train as one model (distill.stacked, two or more); else ()."""
    temps = tuple(float(T) for T in cfg.distill.temperatures)
    return temps if cfg.distill.stacked and len(temps) > 1 else ()


def _hard_key(cfg: RecipeConfig, paths: RunPaths, *, max_epochs: int, patience: int, subset: bool) -> Keyed:
    work = _hard_work(cfg, paths, max_epochs=max_epochs, patience=patience, subset=subset)
    return Keyed.of(work, legacy=[legacy.distill_key(cfg, work.data, hard=True, subset=subset, patience=patience,
                                                     max_epochs=max_epochs)])


def _hard_weight(cfg: RecipeConfig, subset: bool) -> float:
    d = cfg.distill
    return d.subset_hard_weight if subset and d.subset_hard_weight >= 0 else d.hard_weight


def subset_epochs(cfg: RecipeConfig) -> int:
    """Dev checks of the Table-5 subset runs."""
    return cfg.distill.subset_max_epochs or cfg.train.max_epochs


def _target_cache(cfg: RecipeConfig, ens: Ensemble, dm: FrameDataModule,
                  temperatures: Sequence[float]) -> dict[float, torch.Tensor]:
    """p_ens(T) for every training window of ``dm`` (built with return_ids), all T in one pass."""
    ds = dm.train_set
    if not isinstance(ds, InMemoryWindows):
        raise InputError("distill.targets=cached (cache_targets) needs the in-memory training set (small corpora); "
                         "use distill.targets=stored")
    n, k = ds.num_ordered_windows, len(temperatures)
    log.info("caching the ensemble's soft targets: %d windows x %d states x %d temperatures (%.2f GB)",
             n, ens.num_pdfs, k, n * ens.num_pdfs * k * 2 / 1e9)
    device = _device()
    cache = cache_targets(ens.to(device), ds.ordered_windows(4096), n, temperatures, device=device,
                          precision=cfg.train.precision)
    ens.to("cpu")
    return cache


def student_train_config(cfg: RecipeConfig) -> TrainConfig:
    """The training rule of the distill stage's runs: ``train`` with distill.lr_schedule /
    distill.newbob_stop_threshold where those are set."""
    d, changes = cfg.distill, {}
    if d.lr_schedule:
        changes["lr_schedule"] = d.lr_schedule
    if d.newbob_stop_threshold >= 0:
        changes["newbob_stop_threshold"] = d.newbob_stop_threshold
    return dataclasses.replace(cfg.train, **changes)


def subset_period(cfg: RecipeConfig) -> int:
    """Passes over the Table-5 subset per (dev-checked) epoch (0: the steps of one full-data epoch)."""
    return cfg.distill.subset_period


def stored_temperatures(cfg: RecipeConfig) -> list[float]:
    """The temperatures stored targets hold: the students' and the Table-5 soft run's."""
    temps = {float(T) for T in cfg.distill.temperatures}
    if cfg.distill.subset_temperature > 0:
        temps.add(float(cfg.distill.subset_temperature))
    return sorted(temps)


def _stored_targets(cfg: RecipeConfig, paths: RunPaths, ens: Ensemble) -> dict[str, Any]:
    """Write (or reuse, when current) the stored sparse targets of every training shard; their index."""
    from asr_kd.data.shards import read_index, shard_urls
    from asr_kd.nn.soft_targets import targets_key, write_soft_targets

    d, m = cfg.distill, cfg.model
    temps = stored_temperatures(cfg)
    teachers = [TrainRunDir(run_dir).model for run_dir in paths.teacher_dirs(cfg.teachers.num_teachers)]
    key = targets_key(teachers, read_index(paths.shard_index("train")), k=d.targets_k, temperatures=temps,
                      mean=d.ensemble_mean, left=m.left_context, right=m.right_context, precision=cfg.train.precision)
    rank, world = rank_and_world()
    index = write_soft_targets(ens, shard_urls(paths.shard_index("train")), paths.soft_targets_dir, key=key,
                               temperatures=temps, k=d.targets_k, left=m.left_context, right=m.right_context,
                               device=_device(), precision=cfg.train.precision, rank=rank, world=world)
    ens.to("cpu")
    return index


def soft_targets_summary(cfg: RecipeConfig, pdfs: int, stored: dict[str, Any] | None) -> dict[str, Any]:
    """``soft_targets`` of the distill summary: mode, form, k, bytes_per_frame (+ kl_to_dense when stored)."""
    mode = cfg.distill.target_mode
    if mode == "stored" and stored is not None:
        keep = ("mode", "form", "k", "bytes_per_frame", "payload_bytes_per_frame", "kl_to_dense", "temperatures",
                "index_dtype", "frames", "shards", "shards_written", "shards_kept", "write_s")
        return {key: stored[key] for key in keep if key in stored}
    if mode == "cached":  # dense float16 in memory, every T the students train at
        return {"mode": mode, "form": "dense", "k": pdfs, "bytes_per_frame": 2 * pdfs * len(stored_temperatures(cfg))}
    return {"mode": mode, "form": "dense", "k": pdfs, "bytes_per_frame": 0}


def _soft_targets(cfg: RecipeConfig, ens: Ensemble, T: float, *, matching_logits: bool,
                  cached: torch.Tensor | None) -> SoftTargets:
    """The student's target source: its cached p_ens(T) if given, its column of the stored targets with
    distill.targets=stored, else the ensemble online (its logits for the matching-logits student)."""
    if matching_logits:
        return OnlineTargets(ens, T, logits=True)
    if cached is not None:
        return CachedTargets(cached, T)
    if cfg.distill.target_mode == "stored":
        return StoredTargets(stored_temperatures(cfg).index(float(T)), T)
    return OnlineTargets(ens, T)


def _distill_run(cfg: RecipeConfig, paths: RunPaths, dm: FrameDataModule, ens: Ensemble, run_dir: Any, *,
                 T: float, matching_logits: bool = False, max_epochs: int | None = None,
                 subset: bool = False, cached: torch.Tensor | None = None) -> dict[str, Any]:
    pdfs = ens.num_pdfs
    train = student_train_config(cfg)
    hard_weight = _hard_weight(cfg, subset)
    period = subset_period(cfg) if subset else 1
    epochs = (max_epochs or train.max_epochs) * period
    student = AcousticDNN(**arch(cfg, pdfs, student=True), seed=train.seed)
    system = DistillSystem(student, _soft_targets(cfg, ens, T, matching_logits=matching_logits, cached=cached),
                           train, hard_weight=hard_weight, max_epochs=epochs, run_config=to_dict(cfg))
    key = _student_key(cfg, paths, T, matching_logits=matching_logits, subset=subset, max_epochs=max_epochs)
    return train_run(system, dm, train, run_dir, key=key, max_epochs=epochs,
                     early_stopping_patience=train.early_stopping_patience, val_every_n_epochs=period,
                     model_extra={"T": T, "hard_weight": hard_weight})


def _train_stacked_students(cfg: RecipeConfig, paths: RunPaths, dm: FrameDataModule, ens: Ensemble,
                            cache: dict[float, torch.Tensor]) -> None:
    """The students of distill.temperatures as one batched model (distill.stacked); then each member
    goes to its student directory. Nothing runs when every member is finished."""
    d, train = cfg.distill, student_train_config(cfg)
    temps = _stacked_temperatures(cfg)
    max_epochs = d.student_max_epochs or train.max_epochs
    keys = [_student_key(cfg, paths, T, max_epochs=d.student_max_epochs or None) for T in temps]
    if all(run_finished(paths.student_dir(T), k) for T, k in zip(temps, keys)):
        return
    model = StackedDNN([train.seed] * len(temps), **arch(cfg, ens.num_pdfs, student=True))  # each a solo student's init
    sources = [_soft_targets(cfg, ens, T, matching_logits=False, cached=cache.pop(T, None)) for T in temps]
    system = DistillSystem(model, sources, train, hard_weight=d.hard_weight, max_epochs=max_epochs,
                           run_config=to_dict(cfg))
    log.info("students at T = %s, stacked", ", ".join(f"{T:g}" for T in temps))
    metrics = train_run(system, dm, train, paths.students_stacked_dir,
                        key=Keyed.of(StackedStudents(tuple(k.key for k in keys))), max_epochs=max_epochs,
                        early_stopping_patience=train.early_stopping_patience,
                        model_extra={"T": list(temps), "hard_weight": d.hard_weight})
    if global_rank() == 0:
        _write_members(paths, metrics, paths.students_stacked_dir,
                       [(paths.student_dir(T), k) for T, k in zip(temps, keys)], trained_in="stacked")
    barrier()


def _hard_run(cfg: RecipeConfig, paths: RunPaths, dm: FrameDataModule, pdfs: int, run_dir: Any, *,
              max_epochs: int, patience: int, subset: bool) -> dict[str, Any]:
    train = student_train_config(cfg)
    period = subset_period(cfg) if subset else 1
    model = AcousticDNN(**arch(cfg, pdfs, student=True), seed=train.seed)
    system = TeacherSystem(model, train, max_epochs=max_epochs * period, run_config=to_dict(cfg))
    key = _hard_key(cfg, paths, max_epochs=max_epochs, patience=patience, subset=subset)
    return train_run(system, dm, train, run_dir, key=key, max_epochs=max_epochs * period,
                     early_stopping_patience=patience, val_every_n_epochs=period)


def _table5_row(name: str, m: dict[str, Any], fraction: float) -> dict[str, Any]:
    return {"system": name, "train_fraction": fraction, "train_frame_acc": m.get("train_frame_acc"),
            "dev_frame_acc": m.get("dev_frame_acc"), "test_frame_acc": m.get("test_frame_acc"),
            "epochs": m.get("epochs"), "best_epoch": m.get("best_epoch"), "curve": _curve(m)}


def _datamodule(cfg: RecipeConfig, paths: RunPaths, **subset: Any) -> FrameDataModule:
    """The distill stage's data: window ids with cached targets, the targets shards with stored ones."""
    mode = cfg.distill.target_mode
    return shard_datamodule(paths.shard_indexes(), cfg.model, cfg.train, return_ids=mode == "cached",
                            targets_dir=paths.soft_targets_dir if mode == "stored" else None, **subset)


def train_students(cfg: RecipeConfig, paths: RunPaths) -> dict[str, Any]:
    """One student per T, optional matching-logits student, and the three Table-5 runs."""
    d = cfg.distill
    ens = load_ensemble(cfg, paths)
    pdfs = ens.num_pdfs
    mode = d.target_mode
    stored = _stored_targets(cfg, paths, ens) if mode == "stored" else None
    full = _datamodule(cfg, paths)
    todo = [T for T in d.temperatures
            if not run_finished(paths.student_dir(T), _student_key(cfg, paths, T, max_epochs=d.student_max_epochs or None))]
    cache = _target_cache(cfg, ens, full, todo) if mode == "cached" and todo else {}
    if _stacked_temperatures(cfg):
        _train_stacked_students(cfg, paths, full, ens, cache)
    students = []
    for T in d.temperatures:
        m = _distill_run(cfg, paths, full, ens, paths.student_dir(T), T=T, cached=cache.pop(float(T), None),
                         max_epochs=d.student_max_epochs or None)
        students.append({"T": T, **_split_metrics(m), "epochs": m.get("epochs"), "best_epoch": m.get("best_epoch"),
                         "wall_time_s": m.get("wall_time_s")})
    summary: dict[str, Any] = {"hard_weight": d.hard_weight, "ensemble_mean": d.ensemble_mean,
                               "student_params": _params(arch(cfg, pdfs, student=True)),
                               "teacher_params": _params(arch(cfg, pdfs)), "students": students,
                               "soft_targets": soft_targets_summary(cfg, pdfs, stored)}
    if d.matching_logits:
        online = full if mode == "online" else shard_datamodule(paths.shard_indexes(), cfg.model, cfg.train)
        m = _distill_run(cfg, paths, online, ens, paths.matching_logits_dir, T=float("inf"), matching_logits=True)
        summary["matching_logits"] = {**_split_metrics(m), "epochs": m.get("epochs")}
    summary["table5"] = _table5(cfg, paths, ens, full, students)
    return summary


def _table5(cfg: RecipeConfig, paths: RunPaths, ens: Ensemble, full: FrameDataModule,
            students: list[dict[str, Any]]) -> list[dict[str, Any]]:
    d = cfg.distill
    pdfs = ens.num_pdfs
    epochs = subset_epochs(cfg)
    if not d.trains_baseline_100:
        base100 = read_json(TrainRunDir(paths.teacher_dir(0)).metrics)
    else:
        base100 = _hard_run(cfg, paths, full, pdfs, paths.table5_dir("baseline_100"),  # the students' rule
                            max_epochs=d.student_max_epochs or cfg.train.max_epochs,
                            patience=cfg.train.early_stopping_patience, subset=False)
    sub = _datamodule(cfg, paths, subset_fraction=d.subset_fraction, subset_seed=d.subset_seed,
                      subset_unit=d.subset_unit)
    base3 = _hard_run(cfg, paths, sub, pdfs, paths.table5_dir("baseline_3"), max_epochs=epochs,
                      patience=d.subset_early_stopping_patience, subset=True)
    T = d.subset_temperature or max(students, key=lambda s: s["dev"]["frame_acc"])["T"]
    cached = None
    if d.target_mode == "cached" and not run_finished(paths.table5_dir("soft_3"),
                                                      _student_key(cfg, paths, T, subset=True, max_epochs=epochs)):
        cached = _target_cache(cfg, ens, sub, [T])[float(T)]
    soft3 = _distill_run(cfg, paths, sub, ens, paths.table5_dir("soft_3"), T=T, max_epochs=epochs, subset=True,
                         cached=cached)
    rows = [_table5_row("baseline_100", base100, 1.0), _table5_row("baseline_3", base3, d.subset_fraction),
            _table5_row("soft_3", soft3, d.subset_fraction)]
    rows[0]["source"] = "hard-target run" if d.trains_baseline_100 else "teacher 0"
    rows[2]["T"] = T
    return rows
