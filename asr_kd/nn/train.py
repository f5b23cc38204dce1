"""Running one training job: Trainer construction from ``TrainConfig``, resume, final evaluation.

``train_run`` is what every stage calls for one teacher / student / Table-5 run in its own
directory (``asr_kd.paths.TrainRunDir``):

1. if the run finished before with the same key (config + data), return its metrics;
   if its directory holds a run with another key, clear it;
2. ``Trainer.fit`` with ``ckpt_path=last.ckpt`` when one exists (a killed run resumes at its last
   checkpoint, mid-epoch included: see ``asr_kd.data.datamodule.ResumableLoader``);
3. on rank 0: reload the best-on-dev checkpoint, measure dev / test / train frame accuracy,
   write the standalone model file(s), ``metrics.json``, and the run's done marker last.

The Trainer passes ``train.accelerator / devices / num_nodes / strategy / precision`` through;
Lightning detects torchrun and SLURM (``SLURMEnvironment``) by itself. Checkpoints are written
atomically (temp file + rename), so a kill during a save never leaves a truncated ``last.ckpt``.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import time
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger

from asr_kd.config import TrainConfig
from asr_kd.data.datamodule import FrameDataModule
from asr_kd.fileio import atomic_path, read_json, write_json
from asr_kd.nn.ensemble import frame_accuracy
from asr_kd.nn.models import AcousticDNN, StackedDNN, count_parameters, save_model
from asr_kd.nn.precision import resolve_precision
from asr_kd.nn.systems import MONITOR, FrameSystem
from asr_kd.parallel import barrier, global_rank
from asr_kd.files import TrainRunDir
from asr_kd.progress import lightning_callbacks
from asr_kd.work import Keyed

log = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoints written to a temp file beside the target, then renamed over it."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        with atomic_path(path) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)


def parse_devices(devices: str) -> int | str:
    """``train.devices``: "auto", an int ("2"), or a list of ids ("0,1") as Lightning takes them."""
    text = devices.strip()
    if text == "auto":
        return "auto"
    if text.isdigit() or (text.startswith("-") and text[1:].isdigit()):
        return int(text)
    return text


def make_loggers(run: TrainRunDir) -> list[Logger]:
    """CSV always; TensorBoard too when the tensorboard package is installed."""
    loggers: list[Logger] = [CSVLogger(save_dir=str(run.logs), name="", version="csv")]
    if importlib.util.find_spec("tensorboard") is not None or importlib.util.find_spec("tensorboardX") is not None:
        loggers.append(TensorBoardLogger(save_dir=str(run.logs), name="", version="tb"))
    return loggers


def build_trainer(
    train: TrainConfig,
    run: TrainRunDir,
    *,
    max_epochs: int,
    early_stopping_patience: int = 0,
    progress_bar: bool = True,
    extra_callbacks: tuple[Callback, ...] = (),
    val_every_n_epochs: int = 1,
) -> L.Trainer:
    """A Trainer for one run: best (dev frame accuracy) and last checkpoints, CSV/TB logs."""
    best = ModelCheckpoint(dirpath=run.checkpoints, filename=TrainRunDir.best_ckpt_stem, monitor=MONITOR,
                           mode="max", save_top_k=1, save_last=False, auto_insert_metric_name=False,
                           enable_version_counter=False)
    # last.ckpt at every epoch end, and inside epochs every n steps or every so many seconds. No
    # version counter: a resumed run overwrites best.ckpt / last.ckpt instead of adding best-v1.ckpt.
    at_epoch_end = ModelCheckpoint(dirpath=run.checkpoints, save_top_k=0, save_last=True,
                                   enable_version_counter=False)
    if train.checkpoint_every_n_steps > 0:
        inside = dict(every_n_train_steps=train.checkpoint_every_n_steps)
    else:
        inside = dict(train_time_interval=timedelta(seconds=train.checkpoint_every_s))
    periodic = ModelCheckpoint(dirpath=run.checkpoints, save_top_k=0, save_last=True, enable_version_counter=False,
                               **inside)
    bar_callbacks, show_bar = lightning_callbacks() if progress_bar else ([], False)
    callbacks: list[Callback] = [best, at_epoch_end, periodic, *bar_callbacks, *extra_callbacks]
    if early_stopping_patience > 0:
        callbacks.append(EarlyStopping(monitor=MONITOR, mode="max", patience=early_stopping_patience))
    quiet_lightning_logs()
    return L.Trainer(
        accelerator=train.accelerator,
        devices=parse_devices(train.devices),
        num_nodes=train.num_nodes,
        strategy=train.strategy,
        precision=resolve_precision(train.precision, train.accelerator),
        max_epochs=max_epochs,
        check_val_every_n_epoch=val_every_n_epochs,
        default_root_dir=str(run.root),
        logger=make_loggers(run),
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        log_every_n_steps=train.log_every_n_steps,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,  # our datasets split over ranks themselves (asr_kd.data.datamodule)
        enable_progress_bar=show_bar,
        enable_model_summary=False,
    )


def _not_an_advert(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("\N{ELECTRIC LIGHT BULB} Tip:")


def quiet_lightning_logs() -> None:
    """Lightning's messages once, through the application's logging: the ``lightning`` package adds
    its own stderr handler on import, so where the application has configured the root logger (the
    recipe's entry points) every message printed twice; its tips (advertising its cloud services)
    are dropped, and so are three warnings that do not apply."""
    if logging.getLogger().handlers:
        logging.getLogger("lightning").handlers.clear()
    # two warnings that say nothing about this recipe: its window datasets split their shards over
    # the loader's workers themselves (asr_kd.data.windows), so their length holds with workers; and
    # Lightning's own use of a torch API that torch 2.11 deprecates
    warnings.filterwarnings("ignore", message=r"Your `IterableDataset` has `__len__` defined")
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    # and its advice to prepend srun on any machine that has it: the recipe plans its own launch
    # (asr_kd.parallel.plan_launch) and refuses, before any stage, one that needs srun and lacks it
    warnings.filterwarnings("ignore", message=r"The `srun` command is available on your system but is not used")
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if _not_an_advert not in rank_zero.filters:
        rank_zero.addFilter(_not_an_advert)


def _best_checkpoint(trainer: L.Trainer) -> Path | None:
    for cb in trainer.checkpoint_callbacks:
        if isinstance(cb, ModelCheckpoint) and cb.monitor == MONITOR and cb.best_model_path:
            return Path(cb.best_model_path)
    return None


def load_system_weights(system: FrameSystem, ckpt: Path) -> dict[str, Any]:
    """Load a Lightning checkpoint's weights into ``system``; returns its ``asr_kd`` extras."""
    blob = torch.load(ckpt, map_location="cpu", weights_only=False)
    system.load_state_dict(blob["state_dict"])
    return blob.get("asr_kd", {})


def run_finished(run_dir: Path, key: Keyed | str) -> bool:
    """The one rule for "this run is done": finished (done marker, metrics) with this key (or a key
    an older asr-kd gave the same work: ``key.legacy``; a plain string: a key without a record).

    Every caller that plans work (which students need cached targets, which teachers a stacked
    run must train) asks this, so planning and ``train_run`` never disagree.
    """
    run, key = TrainRunDir(run_dir), _keyed(key)
    return run.done.exists() and run.metrics.exists() and run.key.exists() and key.matches(read_json(run.key))


def _keyed(key: Keyed | str) -> Keyed:
    return Keyed(key, None) if isinstance(key, str) else key


def _prepare_run_dir(run: TrainRunDir, key: Keyed) -> dict[str, Any] | None:
    """Return the finished run's metrics if its key matches; rank 0 clears a run with another key.
    A run keyed by an older asr-kd (``key.legacy``) is re-keyed: its key file records this key."""
    stored = read_json(run.key) if run.key.exists() else None
    same = key.matches(stored)
    if global_rank() == 0:
        if stored is not None and not same:
            log.warning("%s holds a run with other settings; clearing it", run.root)
            shutil.rmtree(run.root)
        if not same or stored.get("key") != key.key:
            write_json(run.key, key.stored())
    if run_finished(run.root, key):
        return read_json(run.metrics)
    return None


def train_run(
    system: FrameSystem,
    data: FrameDataModule,
    train: TrainConfig,
    run_dir: Path,
    *,
    key: Keyed | str,
    max_epochs: int,
    early_stopping_patience: int = 0,
    model_extra: dict[str, Any] | None = None,
    progress_bar: bool = True,
    val_every_n_epochs: int = 1,
) -> dict[str, Any]:
    """Train (or resume, or skip if finished) one run; returns its metrics on every rank.

    metrics: dev/test/train ``frame_acc`` of the selected model (stacked: per member lists),
    ``best_epoch``, ``epochs`` (dev checks: one per ``val_every_n_epochs`` passes over the data),
    ``history`` (a row per dev check), ``params``, ``wall_time_s``.
    """
    run = TrainRunDir(run_dir)
    done = _prepare_run_dir(run, _keyed(key))
    if done is not None:
        log.info("run %s already finished, skipping", run.root)
        return done
    L.seed_everything(train.seed, workers=True, verbose=False)
    trainer = build_trainer(train, run, max_epochs=max_epochs, early_stopping_patience=early_stopping_patience,
                            progress_bar=progress_bar, val_every_n_epochs=val_every_n_epochs)
    ckpt = run.last_ckpt if run.last_ckpt.exists() else None
    if ckpt is not None:
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        log.info("resuming %s from %s at epoch %s, step %s", run.root, ckpt.name, state.get("epoch"),
                 state.get("global_step"))
        del state
    t0 = time.time()
    trainer.fit(system, datamodule=data, ckpt_path=str(ckpt) if ckpt else None)
    wall = time.time() - t0
    if trainer.global_rank == 0:
        metrics = _finish(system, data, trainer, run, train, wall, model_extra or {})
    barrier()
    return read_json(run.metrics) if trainer.global_rank != 0 else metrics


def _finish(system: FrameSystem, data: FrameDataModule, trainer: L.Trainer, run: TrainRunDir,
            train: TrainConfig, wall: float, model_extra: dict[str, Any]) -> dict[str, Any]:
    best = _best_checkpoint(trainer) or run.last_ckpt
    extras = load_system_weights(system, best)
    final_history = system.history  # the whole run (the best checkpoint's copy stops at its epoch)
    model = system.model
    device = trainer.strategy.root_device
    model.to(device)
    metrics: dict[str, Any] = {"best_checkpoint": best.name, "best_epoch": extras.get("metrics", {}).get("epoch"),
                               "epochs": len(final_history), "history": final_history,
                               "precision": trainer.precision, "wall_time_s": round(wall, 2)}
    for split in ("dev", "test", "train"):
        if split == "test" and data.test_set is None:
            continue
        cap = train.eval_max_frames if split == "train" else 0
        res = frame_accuracy(model, data.eval_loader(split), device=device, max_frames=cap, desc=f"{split} frame acc",
                             precision=train.precision)
        if "member_frame_acc" in res:
            metrics[f"{split}_frame_acc"] = res["member_frame_acc"]
            metrics[f"{split}_ensemble_frame_acc"] = res["frame_acc"]
        else:
            metrics[f"{split}_frame_acc"] = res["frame_acc"]
        metrics[f"{split}_frames"] = res["frames"]
    model.cpu()
    _save_models(model, run, metrics, system.run_config, model_extra)
    write_json(run.metrics, metrics)
    write_json(run.done, {"finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    return metrics


def _save_models(model: torch.nn.Module, run: TrainRunDir, metrics: dict[str, Any],
                 run_config: dict[str, Any], extra: dict[str, Any]) -> None:
    if isinstance(model, StackedDNN):
        metrics["params"] = count_parameters(model) // model.num_members
        for k in range(model.num_members):
            member_metrics = {key: (v[k] if isinstance(v, list) and key.endswith("frame_acc") else v)
                              for key, v in metrics.items() if key != "history"}
            member_extra = {key: (v[k] if isinstance(v, (list, tuple)) else v) for key, v in extra.items()}  # e.g. each T
            save_model(run.member_model(k), model.member(k), config=run_config, metrics=member_metrics, **member_extra)
    elif isinstance(model, AcousticDNN):
        metrics["params"] = count_parameters(model)
        save_model(run.model, model, config=run_config,
                   metrics={k: v for k, v in metrics.items() if k != "history"}, **extra)
    else:
        raise TypeError(f"cannot save a {type(model).__name__}")
