"""The LibriSpeech recipe: audio -> labels -> ten teachers -> ensemble -> distilled students -> WER.

Run ``python -m asr_kd.recipes.librispeech --help``. Reads top to bottom like Kaldi's ``run.sh``:
the ordered ``STAGES`` list is the recipe; each stage is a module of :mod:`asr_kd.stages` named
after it, a function of (config, run paths) that returns its summary, with the config it reads
declared beside it. Below the list: the command line (``main``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import traceback
from pathlib import Path
from typing import Any

from asr_kd.config import (
    DEFAULT_PRESET,
    PRESETS,
    ConfigError,
    RecipeConfig,
    load_config,
    parse_set_args,
    to_dict,
)
from asr_kd.envcheck import check_environment
from asr_kd.fileio import read_json, write_json
from asr_kd.parallel import (LaunchRefused, RankZeroFailed, distributed_session, global_rank, on_rank_zero,
                             plan_launch, start_ranks)
from asr_kd.paths import RunPaths
from asr_kd.runlock import RunLocked, run_lock
from asr_kd.runner import Stage, StageError, StageRunner
from asr_kd.stages import (align, conditions, decode, distill, ensemble, export, features, graph, lang, prepare, report,
                           shards, teachers)

log = logging.getLogger("asr_kd.recipe")


# ---------------------------------------------------------------------------------------------
# Stages: each a module of asr_kd.stages (its run(cfg, paths), and the config it reads beside it)
# ---------------------------------------------------------------------------------------------
STAGES: list[Stage] = [
    Stage.of(prepare),   # corpus -> manifests
    Stage.of(lang),      # lexicon -> phones.txt, words.txt, topo, L.fst
    Stage.of(features),  # manifests -> fbank + MFCC, CMVN stats
    Stage.of(align),     # GMM-HMM forced alignment -> per-frame HMM-state (pdf) labels
    Stage.of(shards),    # features + labels -> webdataset shards
    Stage.of(teachers),  # K teacher DNNs
    Stage.of(ensemble),  # the K teachers as one ensemble
    Stage.of(distill),   # a student per temperature; the Table-5 runs
    Stage.of(graph),     # n-gram LM -> G.fst -> HCLG.fst
    Stage.of(decode),    # every system through HCLG -> WER
    Stage.of(conditions),  # extra test sets (data.extra_test_subsets) -> WER, frame accuracy
    Stage.of(export),    # model directories for deployment; inference cost
    Stage.of(report),    # report.json, report.md, plots
]


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    stage_names = ", ".join(f"{i}:{s.name}" for i, s in enumerate(STAGES))
    p = argparse.ArgumentParser(
        prog="python -m asr_kd.recipes.librispeech",
        description=(
            "Distil an ensemble of hybrid DNN-HMM acoustic models into one model "
            "(Hinton, Vinyals & Dean 2015, section 4), from audio to the paper's tables. "
            f"Stages: {stage_names}."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--data-root", default=None,
                   help="corpus root: LibriSpeech layout (with e.g. train-clean-100/, dev-clean/, test-clean/), "
                        "Kaldi data dirs or lhotse manifests (data.format, detected by default). "
                        "Without it the embedded synthetic corpus is generated once and used.")
    p.add_argument("--preset", default=DEFAULT_PRESET, choices=PRESETS,
                   help="preset: smoke (CI, minutes), tiny (the laptop demo), tiny-wer (the WER column on real text), "
                        "librispeech-100h, paper")
    p.add_argument("--exp-dir", default=None, help="run directory (default: exp/<preset>)")
    p.add_argument("--stage", default=None, help="first stage to run (name or number)")
    p.add_argument("--stop-stage", default=None, help="last stage to run (name or number)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.lr=0.05 --set distill.temperatures=1,2")
    p.add_argument("--force", action="append", default=[], metavar="STAGE",
                   help="re-run STAGE even though it is done or its config changed (repeatable)")
    p.add_argument("--list", action="store_true", help="list stages with their status and exit")
    p.add_argument("--show", default=None, metavar="STAGE", help="print STAGE's summary as JSON and exit")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as JSON and exit")
    est = p.add_argument_group("cost estimate (runs nothing)")
    est.add_argument("--estimate", action="store_true",
                     help="print each stage's predicted wall time, peak memory and disk, and the total, then exit")
    est.add_argument("--hours", type=float, default=None, help="training-set hours (default: the preset's corpus)")
    est.add_argument("--cores", type=int, default=None, help="CPU cores of the target machine (default: this one's)")
    est.add_argument("--gpus", type=int, default=0, help="GPUs of the target machine (H100-class)")
    est.add_argument("--mfu", type=float, default=None,
                     help="share of a GPU's bf16 peak the networks reach (default: asr_kd.recipes.estimate.DEFAULT_MFU)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def resolve_config(args: argparse.Namespace) -> RecipeConfig:
    overrides: dict[str, Any] = parse_set_args(args.overrides)
    if args.data_root is not None:
        overrides["data.root"] = str(Path(args.data_root).resolve())
    return load_config(args.preset, overrides)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rank = global_rank()  # under DDP ranks > 0 log only warnings (rank 0 tells the story), marked
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO if rank == 0 else logging.WARNING,
        format="%(asctime)s %(levelname)s " + (f"[rank {rank}] " if rank else "") + "%(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        cfg = resolve_config(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    paths = RunPaths(Path(args.exp_dir) if args.exp_dir else Path("exp") / args.preset)
    runner = StageRunner(STAGES, cfg, paths)

    if args.print_config:
        print(json.dumps(to_dict(cfg), indent=2))
        return 0
    if args.estimate:
        return _estimate(cfg, args)
    if args.list:
        print(f"{'#':>2}  {'stage':<9} {'status':<11} wall")
        for i, name, status, wall in runner.listing():
            print(f"{i:>2}  {name:<9} {status:<11} {wall}")
        return 0
    if args.show:
        try:
            name = STAGES[runner.resolve(args.show, 0)].name
        except StageError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        marker = runner.read_marker(name)
        if marker is None:
            print(f"error: stage '{name}' has not run in {paths.root}", file=sys.stderr)
            return 1
        print(json.dumps(marker["summary"], indent=2))
        return 0

    problems = check_environment()
    for problem in problems:
        print(problem.line(), file=sys.stderr)
    if any(p.fatal for p in problems):
        return 3
    task = f"teacher-{cfg.teachers.only}" if cfg.teachers.only >= 0 else None  # one task of a job array
    try:
        if task is not None:
            _check_task_range(runner, args)
        launch = plan_launch(cfg.train.accelerator, cfg.train.devices, cfg.train.num_nodes, cfg.train.strategy,
                             training=_trains(runner, args))
    except (LaunchRefused, StageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if launch.kind == "spawn":  # a plain command asking for several devices: it starts its ranks
        return _run_as_ranks(launch.processes, runner, args, sys.argv[1:] if argv is None else argv, task)
    log_file: Path | None = None
    handler: logging.Handler | None = None
    lock = contextlib.ExitStack()

    def start() -> None:  # rank 0, before any stage: the lock, the log file, the config checks
        nonlocal handler, log_file
        lock.enter_context(run_lock(paths.root, task=task))
        handler, log_file = _log_to_file(paths), paths.recipe_log
        runner.check(args.stage, args.stop_stage, args.force)
        _write_run_config(cfg, paths)

    try:
        # torchrun / srun with several tasks: one process group for the whole run; rank 0 runs
        # every stage but the training ones, which all ranks join (asr_kd.runner.StageRunner.run)
        with distributed_session(cfg.train.accelerator), lock:
            on_rank_zero(start)
            runner.run(args.stage, args.stop_stage, args.force)
    except RankZeroFailed as e:
        print(f"error: rank {global_rank()} stops: {e}", file=sys.stderr)
        return 1
    except (StageError, ConfigError, RunLocked) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - any failure ends in one line; -v (or the log) has the traceback
        if log_file is not None:
            with open(log_file, "a", encoding="utf-8") as f:
                f.write(traceback.format_exc())
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        where = f"; full log: {log_file}" if log_file else ""
        print(f"error: {type(e).__name__}: {first}{where} (run with -v for the traceback)", file=sys.stderr)
        if args.verbose:
            raise
        return 1
    finally:
        if handler is not None:
            logging.getLogger().removeHandler(handler)
            handler.close()
    if global_rank() == 0 and runner.status(STAGES[-1]) == "done" and paths.report_md.exists():
        print(_report_tables(paths.report_md.read_text()))
        print(f"full report: {paths.report_md}")
    return 0


def _estimate(cfg: RecipeConfig, args: argparse.Namespace) -> int:
    """``--estimate``: the run's predicted cost per stage, from the shipped reference costs."""
    import os

    from asr_kd.recipes import estimate

    try:
        costs = estimate.load_costs()
        corpus = estimate.corpus_of(cfg, costs, args.hours)
    except estimate.EstimateError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    cores = args.cores or os.cpu_count() or 1
    mfu = args.mfu or estimate.DEFAULT_MFU
    rows = estimate.predict(cfg, corpus, costs, cores=cores, gpus=args.gpus, mfu=mfu,
                            stages=[s.name for s in STAGES])
    print(estimate.render(cfg, corpus, rows, costs, cores, args.gpus, mfu))
    return 0


def _trains(runner: StageRunner, args: argparse.Namespace) -> bool:
    """Whether this command may run a training stage: one in its range that is not done, or that a
    stage before it in the range (not done, or forced) would make stale."""
    selected, forced = runner.selection(args.stage, args.stop_stage, args.force)
    todo = False
    for stage in selected:
        todo = todo or stage.name in forced or runner.status(stage) != "done"
        if stage.distributed and todo:
            return True
    return False


def _check_task_range(runner: StageRunner, args: argparse.Namespace) -> None:
    """``teachers.only=k`` (one task of a job array) shares the run directory with the other tasks:
    it may train its teacher, never run a stage before it (they would all run it at once)."""
    selected, forced = runner.selection(args.stage, args.stop_stage, args.force)
    for stage in selected:
        if stage.name == "teachers":
            return
        if stage.name in forced or runner.status(stage) != "done":
            raise StageError(f"teachers.only={runner.cfg.teachers.only} trains one teacher beside the other tasks "
                             f"of a job array, but stage '{stage.name}' is not done: run the stages before "
                             f"'teachers' first (one job), then the tasks with --stage teachers --stop-stage teachers")


def _run_as_ranks(processes: int, runner: StageRunner, args: argparse.Namespace, argv: list[str],
                  task: str | None) -> int:
    """A plain command with ``train.devices=N`` (N > 1): hold the run lock, check the config as a
    one-process run would, then run the same command as N ranks on this node (torchrun's
    ``--standalone``), as ``torchrun --nproc-per-node=N`` would; their exit status is ours."""
    paths = runner.paths
    try:
        with run_lock(paths.root, task=task):
            runner.check(args.stage, args.stop_stage, args.force)
            log.info("train.devices=%s with train.strategy=%s: this command runs as %d ranks on this node",
                     runner.cfg.train.devices, runner.cfg.train.strategy, processes)
            status = start_ranks(processes, "asr_kd.recipes.librispeech", argv)
    except (StageError, RunLocked) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if status != 0:
        print(f"error: the {processes} ranks this command started exited with status {status}; their errors "
              f"are above, the log is {paths.recipe_log}", file=sys.stderr)
        return 1
    return 0


def _log_to_file(paths: RunPaths) -> logging.Handler:
    """Everything the recipe logs also goes to <exp>/recipe.log (appended; tracebacks included)."""
    paths.root.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(paths.recipe_log, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S"))
    handler.setLevel(logging.DEBUG)
    logging.getLogger().addHandler(handler)
    return handler


def _report_tables(markdown: str) -> str:
    """The report's Table 1 and Table 5 sections (what the demo prints at the end)."""
    keep, out = False, []
    for line in markdown.splitlines():
        if line.startswith("## "):
            keep = line.startswith("## Table")
        if keep:
            out.append(line)
    return "\n".join(out)


def _write_run_config(cfg: RecipeConfig, paths: RunPaths) -> None:
    """The resolved config goes to the run dir before any stage runs (history kept on change)."""
    tree = to_dict(cfg)
    if paths.config.exists():
        old = read_json(paths.config)
        if old == tree:
            return
    write_json(paths.config, tree)


if __name__ == "__main__":
    sys.exit(main())
