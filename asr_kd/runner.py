"""Named, ordered, resumable stages with completion markers.

Each stage writes its outputs under ``<exp>/<stage>/`` and then, last and atomically, its marker
``DONE.json``. The marker holds a hash of the config values the stage reads (``config_hash``) and
the hashes of the upstream markers it depends on, the stage's summary (counts, quality numbers),
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
from asr_kd.config import NEUTRAL_DEFAULTS, RecipeConfig, config_hash, global_batch_size, to_dict
from asr_kd.errors import InputError
from asr_kd.fileio import read_json, write_json
from asr_kd.parallel import global_rank, on_rank_zero
from asr_kd.paths import RunPaths

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
    # The config it reads: sections ("train") or keys ("decode.lm_order"), hashed into its marker;
    # with "!" ("!train.devices", "!teachers"): read, but not hashed (where a run happens, not what;
    # or a value whose change reaches it through an upstream stage that re-runs).
    reads: tuple[str, ...]
    after: tuple[str, ...]  # upstream stages whose outputs it reads
    distributed: bool = False  # runs on every rank under DDP (training); else rank 0 only
    doc: str = ""
    # What the stage computes from the same inputs, changed by asr-kd itself (e.g. the graph stage's
    # decoding vocabulary, 1: the LM's words and the training transcripts', never dev or test's):
    # hashed with its config, so a run finished by an older asr-kd is refused with this said, not reused.
    version: int = 0
    version_note: str = ""  # what the latest version changed, said when an older run is refused
    # Keys the stage began to read after runs were made, with the value at which its work is what it
    # was without them: left out of its hash at that value (as config.NEUTRAL_DEFAULTS for new options).
    neutral_reads: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def of(cls, module: ModuleType) -> Stage:
        """The stage a module of :mod:`asr_kd.stages` defines: named after the module, its ``run``,
        and the ``READS``, ``AFTER``, ``DISTRIBUTED`` and ``DOC`` declared beside it."""
        return cls(module.__name__.rsplit(".", 1)[-1], module.run, reads=tuple(module.READS),
                   after=tuple(module.AFTER), distributed=getattr(module, "DISTRIBUTED", False),
                   doc=module.DOC, version=getattr(module, "VERSION", 0),
                   version_note=getattr(module, "VERSION_NOTE", ""),
                   neutral_reads=tuple(getattr(module, "NEUTRAL_READS", {}).items()))

    def hashed_config(self, cfg: RecipeConfig) -> dict[str, Any]:
        """What the stage's marker hashes: the config it reads and, from version 1 on, its version."""
        out = selected_config(cfg, self.reads)
        for key, neutral in self.neutral_reads:
            if key in out and out[key] == neutral:
                del out[key]
        if self.version:
            out["stage_version"] = self.version
        return out


def marker_summary(paths: RunPaths, stage: str) -> dict[str, Any]:
    """The summary a finished stage stored in its marker ({} when it has not run)."""
    m = paths.marker(stage)
    return read_json(m).get("summary", {}) if m.exists() else {}


def selected_config(cfg: RecipeConfig, reads: Sequence[str]) -> dict[str, Any]:
    """The config values a stage's marker hashes: ``"train"`` (a section), ``"decode.beam"`` (a key);
    ``"!..."`` entries are read but not hashed (``"!train.devices"`` leaves a key out of a section
    read whole)."""
    tree = to_dict(cfg)
    out: dict[str, Any] = {}
    for key in reads:
        if key.startswith("!"):
            continue
        section, _, name = key.partition(".")
        out[key] = tree[section][name] if name else dict(tree[section])
    for key in reads:
        if key.startswith("!"):
            section, _, name = key[1:].partition(".")
            out.get(section, {}).pop(name, None)
    for key, default in NEUTRAL_DEFAULTS.items():  # an option added later, at the value that changes nothing
        section, _, name = key.partition(".")
        if key in out and out[key] == default:
            del out[key]
        elif name in out.get(section, {}) and out[section][name] == default:
            del out[section][name]
    train = out.get("train", {})
    if "batch_size" in train:
        # the batch the optimiser sees, as the run keys hash it (config.train_result_keys): 2 ranks
        # of 128 compute what 1 process of 256 does, so a job of 8 GPUs at the per-rank batch of
        # global/8 finds the one-GPU jobs' stages done (one process hashes the value as set)
        train["batch_size"] = global_batch_size(cfg.train)
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

    def own_hash(self, stage: Stage) -> str:
        return config_hash(stage.hashed_config(self.cfg))

    def config_changed(self, stage: Stage, m: dict[str, Any]) -> bool:
        """Whether marker ``m`` hashed another config than ``stage`` reads now. A marker made before
        config keys were retired matches without them where they held a value that kept the stage's
        work (:func:`asr_kd.retired.marker_config`)."""
        own = self.own_hash(stage)
        return m["config_hash"] != own and ("config" not in m or config_hash(retired.marker_config(m["config"])) != own)

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
            before = retired.marker_config(m.get("config", {}))
            now = stage.hashed_config(self.cfg)
            if before.get("stage_version", 0) != stage.version:
                return (f"asr-kd changed what it computes (stage version {before.get('stage_version', 0)} -> "
                        f"{stage.version}{': ' + stage.version_note if stage.version_note else ''})")
            changed = _changed_keys(before, now)
            return "its config changed (" + ", ".join(changed) + ")" if changed else "its config changed"
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
        marker = {
            "stage": stage.name,
            "run_id": uuid.uuid4().hex,  # what downstream markers record of this run
            "config_hash": self.own_hash(stage),
            "config": stage.hashed_config(self.cfg),
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


def _changed_keys(before: dict[str, Any], now: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(before) | set(now)):
        a, b = before.get(k), now.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _changed_keys(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: {a!r} -> {b!r}")
    return out
