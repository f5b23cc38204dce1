"""Named, ordered, resumable stages with completion markers.

Each stage writes its outputs under ``<exp>/<stage>/`` and then, last and atomically, its marker
``DONE.json``. The marker holds the record of the stage's work (its slice of the config, the
stage module's ``work``: :mod:`asr_kd.work`) and its key, the ids of the upstream markers it
depends on, the stage's summary (counts, quality numbers),
package versions and wall time.

Status of a stage:
    done         marker present, own config and upstream unchanged
    stale        marker present, but its config or an upstream stage changed
    pending      no marker yet
    unavailable  not built in this version of the recipe

A stage whose *own* config changed is never re-run silently: the runner stops and names the
``--force`` that re-runs it. A stage that is stale only because an upstream stage was re-run is
re-run automatically (as ``make`` would).
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

from asr_kd import retired
from asr_kd.config import ConfigError, RecipeConfig, apply_overrides, train_world_size
from asr_kd.errors import InputError
from asr_kd.fileio import read_json, write_json
from asr_kd.parallel import global_rank, on_rank_zero
from asr_kd.paths import RunPaths
from asr_kd.work import added_defaults, changed, hash_record, record

log = logging.getLogger(__name__)

StageFn = Callable[[RecipeConfig, RunPaths], dict[str, Any]]


class StageError(RuntimeError):
    """A stage cannot run: an input it reads is missing or bad (the message names the file and says
    what to do, e.g. which stage to re-run or which ``--set`` to change), its outputs are stale, or
    it is not built. The command line prints it as one ``error:`` line."""


class StageIncomplete(Exception):
    """Raised by a stage that finished its share of the work but not the whole stage.

    E.g. one teacher of a SLURM job array (``--set teachers.only=3``): that teacher is trained and
    checkpointed, but the stage's marker is written only by a run that finds all K done.
    """


@dataclass(frozen=True)
class Stage:
    name: str
    run: StageFn | None  # None: not built yet ("unavailable")
    # The slice of the config its outputs depend on (a frozen dataclass; asr_kd.work): what its
    # marker records and keys. What reaches it through an upstream stage is that stage's.
    work: Callable[[RecipeConfig], Any]
    after: tuple[str, ...]  # upstream stages whose outputs it reads
    distributed: bool = False  # runs on every rank under DDP (training); else rank 0 only
    doc: str = ""
    # What the stage computes from the same inputs, changed by asr-kd itself (e.g. the graph stage's
    # decoding vocabulary, 1: the LM's words and the training transcripts', never dev or test's):
    # recorded with its work, so a run finished by an older asr-kd is refused with this said, not reused.
    version: int = 0
    version_note: str = ""  # what the latest version changed, said when an older run is refused

    @classmethod
    def of(cls, module: ModuleType) -> Stage:
        """The stage a module of :mod:`asr_kd.stages` defines: named after the module, its ``run``
        and ``work``, and the ``AFTER``, ``DISTRIBUTED``, ``DOC`` and ``VERSION`` declared beside it."""
        return cls(module.__name__.rsplit(".", 1)[-1], module.run, work=module.work,
                   after=tuple(module.AFTER), distributed=getattr(module, "DISTRIBUTED", False),
                   doc=module.DOC, version=getattr(module, "VERSION", 0),
                   version_note=getattr(module, "VERSION_NOTE", ""))

    def record(self, cfg: RecipeConfig) -> dict[str, Any]:
        """What the stage's marker records of its work: its slice of ``cfg`` and, from version 1 on,
        its version."""
        out = record(self.work(cfg))
        if self.version:
            out["stage_version"] = self.version
        return out


def marker_summary(paths: RunPaths, stage: str) -> dict[str, Any]:
    """The summary a finished stage stored in its marker ({} when it has not run)."""
    m = paths.marker(stage)
    return read_json(m).get("summary", {}) if m.exists() else {}


def config_key(name: str) -> str:
    """The config key (``section.name``) a dotted name of a work record stands for, where a slice
    holds a value of a section by its name alone (``lm_vocab_size`` -> ``data.lm_vocab_size``)."""
    head = name.partition(".")[0]
    sections = {f.name: getattr(RecipeConfig(), f.name) for f in dataclasses.fields(RecipeConfig)}
    if head in sections:
        return name
    owners = [s for s, section in sections.items()
              if dataclasses.is_dataclass(section) and head in {g.name for g in dataclasses.fields(section)}]
    return f"{owners[0]}.{name}" if len(owners) == 1 else name


def legacy_record(stage: Stage, cfg: RecipeConfig, old: dict[str, Any]) -> dict[str, Any] | None:
    """What ``stage`` records today of the work an older marker recorded (asr-kd before its work
    slices: ``config``, the values its ``READS`` named, ``{"train": {...}, "decode.beam": 8}``), or
    None when that record names keys this asr-kd lacks.

    That work is ``cfg`` with the values the old marker recorded, and options added since
    (:data:`asr_kd.work.ADDED`) it did not record at the defaults that kept its work; whatever it
    did not record it read through an upstream stage, or not at all. So a marker is recognised
    exactly when today's config would have given it the same record."""
    old = retired.marker_config(old)
    version = old.pop("stage_version", 0)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        section = getattr(cfg, f.name)
        if dataclasses.is_dataclass(section):
            values.update({f"{f.name}.{k}": v for k, v in added_defaults(section).items()})
    for read, value in old.items():
        if isinstance(value, dict):
            values.update({f"{read}.{k}": v for k, v in value.items()})
        else:
            values[read] = value
    if "train.batch_size" in values:  # recorded as the global batch
        world = train_world_size(cfg.train)
        if values["train.batch_size"] % world:
            return None
        values["train.batch_size"] //= world
    try:
        then = apply_overrides(cfg, values)
    except (ConfigError, TypeError, ValueError):
        return None
    out = record(stage.work(then))
    if version:
        out["stage_version"] = version
    return out


def peak_memory_mb() -> dict[str, float]:
    """Peak resident memory so far of this process and of its finished child processes (MB).

    The recipe process's peak covers every stage it ran so far: run one stage alone
    (``--stage S --stop-stage S``) to read that stage's own peak.
    """
    import resource

    kb = 1024.0  # ru_maxrss is in kilobytes on Linux
    return {
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / kb, 1),
        "peak_rss_children_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / kb, 1),
    }


def versions() -> dict[str, str]:
    out = {}
    for pkg in ("asr-kd", "torch", "torchaudio", "lightning", "kaldi-hmm-gmm", "kaldifst", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def remove_stale_temp_files(root: Path) -> int:
    """Delete the temp files (``.NAME.*.tmp*`` of asr_kd.fileio) a killed run left under ``root``.

    Called at a stage's start, under the run lock, so no live writer owns them."""
    removed = 0
    if root.exists():
        for f in root.rglob(".*.tmp*"):
            if f.is_file():
                removed += 1
                f.unlink(missing_ok=True)
    if removed:
        log.info("removed %d temp file(s) left by an interrupted run under %s", removed, root)
    return removed


class StageRunner:
    def __init__(self, stages: Sequence[Stage], cfg: RecipeConfig, paths: RunPaths) -> None:
        self.stages = list(stages)
        self.by_name = {s.name: s for s in self.stages}
        self.cfg = cfg
        self.paths = paths

    def temp_dirs(self, stage: str) -> list[Path]:
        """Where a stage's start removes the temp files a killed run left: its directory, or, for
        one task of a job array (``teachers.only=k``), which shares the run directory with the other
        tasks, that task's own teacher directories only."""
        k = self.cfg.teachers.only
        if k < 0:
            return [self.paths.stage_dir(stage)]
        return [self.paths.teacher_dir(k)] if stage == "teachers" else []

    # -- lookup ------------------------------------------------------------------
    def resolve(self, ref: str | None, default: int) -> int:
        """A stage name or 0-based number -> its index."""
        if ref is None:
            return default
        if ref.isdigit():
            i = int(ref)
            if not 0 <= i < len(self.stages):
                raise StageError(f"stage number {i} out of range 0..{len(self.stages) - 1}")
            return i
        if ref not in self.by_name:
            raise StageError(f"unknown stage {ref!r}; stages: {', '.join(self.by_name)}")
        return [s.name for s in self.stages].index(ref)

    def selection(self, start: str | None, stop: str | None, force: Sequence[str] = ()) -> tuple[list[Stage], set[str]]:
        """The stages ``start`` .. ``stop`` (names or numbers) and the names of the ``force``d ones."""
        i0 = self.resolve(start, 0)
        i1 = self.resolve(stop, len(self.stages) - 1)
        return self.stages[i0 : i1 + 1], {self.stages[self.resolve(f, 0)].name for f in force}

    def recorded(self, stage: Stage, m: dict[str, Any]) -> dict[str, Any] | None:
        """What marker ``m`` records of the stage's work (read as today's record for a marker an
        older asr-kd wrote: :func:`legacy_record`; None where it cannot be read so)."""
        if "work" in m:
            return m["work"]
        return legacy_record(stage, self.cfg, m.get("config", {}))

    def config_changed(self, stage: Stage, m: dict[str, Any]) -> bool:
        """Whether marker ``m`` records other work than ``stage`` would do now."""
        return self.recorded(stage, m) != stage.record(self.cfg)

    def read_marker(self, name: str) -> dict[str, Any] | None:
        path = self.paths.marker(name)
        if not path.exists():
            return None
        return read_json(path)

    def marker_id(self, name: str) -> str | None:
        """What downstream markers record of an upstream stage: the id of its latest run."""
        m = self.read_marker(name)
        if m is None:
            return None
        return m["run_id"]

    def status(self, stage: Stage) -> str:
        if stage.run is None:
            return "unavailable"
        m = self.read_marker(stage.name)
        if m is None:
            return "pending"
        if self.config_changed(stage, m):
            return "stale"
        for up in stage.after:
            if m["upstream"].get(up) != self.marker_id(up) or self.status(self.by_name[up]) != "done":
                return "stale"
        return "done"

    def stale_reason(self, stage: Stage) -> str:
        m = self.read_marker(stage.name)
        assert m is not None
        if self.config_changed(stage, m):
            before, now = self.recorded(stage, m), stage.record(self.cfg)
            if before is None:
                return "its marker was written by an older asr-kd, and records config keys this version lacks"
            if before.get("stage_version", 0) != stage.version:
                return (f"asr-kd changed what it computes (stage version {before.get('stage_version', 0)} -> "
                        f"{stage.version}{': ' + stage.version_note if stage.version_note else ''})")
            diff = changed(before, now, name=config_key)
            return "its config changed (" + ", ".join(diff) + ")" if diff else "its config changed"
        ups = [u for u in stage.after if m["upstream"].get(u) != self.marker_id(u)]
        if ups:
            return "upstream stage(s) re-ran: " + ", ".join(ups)
        stale = [u for u in stage.after if self.status(self.by_name[u]) == "stale"]
        return "; ".join(f"upstream stage '{u}' is stale ({self.stale_reason(self.by_name[u])})" for u in stale)

    # -- running -------------------------------------------------------------------
    def check(self, start: str | None = None, stop: str | None = None, force: Sequence[str] = ()) -> None:
        """Raise the StageError ``run`` would raise for a stage whose own config changed, before
        anything runs (so a refused change leaves the run directory, config.json included, alone)."""
        if self.paths.config.exists():  # a run made with a key since retired, at a value that mattered
            try:
                retired.check_run_config(read_json(self.paths.config))
            except ValueError as e:
                raise StageError(str(e)) from None
        selected, forced = self.selection(start, stop, force)
        for stage in selected:
            m = self.read_marker(stage.name) if stage.run is not None else None
            if m is not None and stage.name not in forced and self.config_changed(stage, m):
                raise StageError(
                    f"stage '{stage.name}' already ran with different inputs: {self.stale_reason(stage)}. "
                    f"Re-run it with --force {stage.name} (its old outputs are replaced), "
                    f"or use another --exp-dir."
                )

    def run(self, start: str | None = None, stop: str | None = None, force: Sequence[str] = ()) -> None:
        """Run the stages ``start`` .. ``stop`` that are not done (and the ``force``d ones).

        Under DDP (torchrun, ``srun``; :func:`asr_kd.parallel.distributed_session`) rank 0 decides
        what runs and writes every marker; a stage that is not ``distributed`` runs on rank 0 while
        the other ranks wait for its outcome; a distributed one (training) runs on every rank.
        """
        selected, forced = self.selection(start, stop, force)
        rank = global_rank()
        rerun: set[str] = set()
        for stage in selected:
            if not on_rank_zero(self._should_run, stage, forced, rerun):
                continue
            if stage.distributed:
                try:
                    outcome: bool | Exception = self._attempt(stage, rank)
                except Exception as e:
                    if rank != 0:
                        raise  # the launcher ends the others (torchrun) or their collectives fail
                    outcome = e
                # all wait for rank 0's marker; its error, if any, ends every rank
                complete = on_rank_zero(_outcome, outcome)
            else:
                complete = on_rank_zero(self._attempt, stage, rank)
            if not complete:
                return  # later stages need the whole stage: stop here, successfully
            rerun.add(stage.name)

    def _should_run(self, stage: Stage, forced: set[str], rerun: set[str]) -> bool:
        """Whether ``stage`` runs now (False: done, skipped); raises StageError when it cannot run
        or its inputs changed without ``--force``. Asked on rank 0 only."""
        st = self.status(stage)
        if st == "unavailable":
            raise StageError(
                f"stage '{stage.name}' is not built yet in this version of asr-kd; "
                f"stages up to '{self.stages[self.stages.index(stage) - 1].name}' are done. "
                f"Use --stop-stage to stop before it."
            )
        for up in stage.after:
            if self.read_marker(up) is None:
                raise StageError(
                    f"stage '{stage.name}' needs stage '{up}', which has not run; "
                    f"run with --stage {up} (or without --stage)"
                )
        if st == "done" and stage.name not in forced:
            log.info("stage %-9s done, skipping", stage.name)
            self._rewrite_legacy_marker(stage)
            return False
        if st == "stale" and stage.name not in forced:
            m = self.read_marker(stage.name)
            own_changed = m is not None and self.config_changed(stage, m)
            upstream_rerun = any(u in rerun for u in stage.after)
            if own_changed or not upstream_rerun:
                raise StageError(
                    f"stage '{stage.name}' already ran with different inputs: {self.stale_reason(stage)}. "
                    f"Re-run it with --force {stage.name} (its old outputs are replaced), "
                    f"or use another --exp-dir."
                )
        return True

    def _rewrite_legacy_marker(self, stage: Stage) -> None:
        """A done stage's marker written by an older asr-kd (recognised: :func:`legacy_record`) is
        rewritten to record its work as this version does, its run id and summary kept."""
        m = self.read_marker(stage.name)
        if m is None or "work" in m:
            return
        for old in ("config", "config_hash"):
            m.pop(old, None)
        m["work"] = stage.record(self.cfg)
        m["work_key"] = hash_record(m["work"])
        write_json(self.paths.marker(stage.name), m)
        log.info("stage %-9s its marker, written by an older asr-kd, now records its work as this version does",
                 stage.name)

    def _attempt(self, stage: Stage, rank: int) -> bool:
        """Run ``stage`` (this rank's part); False if it did its part but is not complete."""
        try:
            self._run_one(stage, rank)
        except StageIncomplete:
            return False
        return True

    def _run_one(self, stage: Stage, rank: int) -> None:
        assert stage.run is not None
        log.info("stage %-9s running", stage.name)
        if rank == 0 and self.paths.marker(stage.name).exists():
            self.paths.marker(stage.name).unlink()
        if rank == 0:
            for root in self.temp_dirs(stage.name):
                remove_stale_temp_files(root)
        t0 = time.time()
        try:
            summary = stage.run(self.cfg, self.paths)
        except StageIncomplete as e:
            log.info("stage %-9s did its part (%s); no marker written", stage.name, e)
            raise
        except InputError as e:  # the library's bad-input error becomes the stage's: same message
            raise StageError(str(e)) from e
        wall = time.time() - t0
        if rank != 0:
            return
        work = stage.record(self.cfg)
        marker = {
            "stage": stage.name,
            "run_id": uuid.uuid4().hex,  # what downstream markers record of this run
            "work_key": hash_record(work),
            "work": work,
            "upstream": {u: self.marker_id(u) for u in stage.after},
            "summary": summary,
            "wall_time_s": round(wall, 3),
            **peak_memory_mb(),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "versions": versions(),
        }
        write_json(self.paths.marker(stage.name), marker)
        log.info("stage %-9s finished in %.1f s", stage.name, wall)

    def listing(self) -> list[tuple[int, str, str, str]]:
        rows = []
        for i, s in enumerate(self.stages):
            st = self.status(s)
            m = self.read_marker(s.name) if st in ("done", "stale") else None
            wall = f"{m['wall_time_s']:.1f}s" if m else ""
            rows.append((i, s.name, st, wall))
        return rows


def _outcome(value: bool | Exception) -> bool:
    if isinstance(value, Exception):
        raise value
    return value
