"""The LibriSpeech recipe: audio -> labels -> ten teachers -> ensemble -> distilled students -> WER.

Run ``python -m asr_kd.recipes.librispeech --help``. Reads top to bottom like Kaldi's ``run.sh``:
one function per stage, each a function of (config, run paths) that returns its summary; the
ordered ``STAGES`` list at the bottom is the recipe.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import traceback
from pathlib import Path
from typing import Any

from asr_kd.config import (
    DEFAULT_PRESET,
    PRESETS,
    TRAIN_WHERE_NOT_WHAT,
    ConfigError,
    RecipeConfig,
    load_config,
    parse_set_args,
    to_dict,
)
from asr_kd.envcheck import check_environment
from asr_kd.fileio import read_json, write_json
from asr_kd.paths import SPLITS, RunPaths
from asr_kd.runlock import RunLocked, run_lock
from asr_kd.stages import Stage, StageError, StageRunner, global_rank

log = logging.getLogger("asr_kd.recipe")


# ---------------------------------------------------------------------------------------------
# Stages
# ---------------------------------------------------------------------------------------------
def corpus_root(cfg: RecipeConfig) -> Path:
    """The corpus this run reads: --data-root, or the embedded synthetic corpus."""
    if cfg.data.root:
        return Path(cfg.data.root)
    d = cfg.data
    return Path(d.synthetic_dir) / f"synthetic-{d.synthetic_size}-seed{d.synthetic_seed}"


def split_subsets(cfg: RecipeConfig) -> dict[str, tuple[str, ...]]:
    """Subset directories per split: data.{train,dev,test}_subsets where given, else the corpus's
    own: the synthetic corpus's (also when it is passed as --data-root, recognised by its marker),
    or LibriSpeech's train-clean-100 / dev-clean / test-clean."""
    from data_prep.librispeech import DEFAULT_SUBSETS
    from data_prep.synthetic import MARKER_NAME, SUBSETS

    synthetic = not cfg.data.root or (Path(cfg.data.root) / MARKER_NAME).exists()
    own = {split: (SUBSETS[split],) for split in SPLITS} if synthetic else DEFAULT_SUBSETS
    d = cfg.data
    given = {"train": d.train_subsets, "dev": d.dev_subsets, "test": d.test_subsets}
    return {split: tuple(given[split]) or own[split] for split in SPLITS}


def min_utterance_samples(cfg: RecipeConfig) -> int:
    """Samples an utterance needs for one DNN input window (left + 1 + right frames; 0.275 s with
    the defaults). Shorter audio is skipped by prepare as too_short.

    Not part of prepare's config keys on purpose: the windows are edge-padded, so this is a floor
    for usable audio, and a changed model context must not re-run the data preparation."""
    from asr_kd.features import samples_for_frames

    frames = cfg.model.left_context + 1 + cfg.model.right_context
    return samples_for_frames(frames, cfg.data.sample_rate, cfg.features)


def stage_prepare(cfg: RecipeConfig, paths: RunPaths) -> dict[str, Any]:
    """Corpus (LibriSpeech layout) -> manifest-<split>.jsonl; bad input (unusable audio included) named and counted."""
    from data_prep.librispeech import prepare_manifests

    root = corpus_root(cfg)
    if not cfg.data.root:
        from data_prep.synthetic import ensure_corpus

        ensure_corpus(root, size=cfg.data.synthetic_size, seed=cfg.data.synthetic_seed)
    return prepare_manifests(root, split_subsets(cfg), paths, cfg.data, min_samples=min_utterance_samples(cfg))


def stage_features(cfg: RecipeConfig, paths: RunPaths) -> dict[str, Any]:
    """Manifests -> fbank (DNN) + MFCC (aligner) ark/scp per split, CMVN stats (global from train)."""
    from asr_kd.features import compute_features

    return compute_features(paths, cfg.features, sample_rate=cfg.data.sample_rate)


def stage_shards(cfg: RecipeConfig, paths: RunPaths) -> dict[str, Any]:
    """Features + CMVN + alignments -> webdataset shards and index.json per split."""
    from asr_kd.shards import write_shards

    return write_shards(paths, cfg.features, cfg.shards)


def stage_lang(cfg: RecipeConfig, paths: RunPaths) -> dict[str, Any]:
    """Manifest (+ LM text) words and the lexicon -> phones.txt, words.txt, topo, L.fst (Kaldi formats)."""
    from asr_kd.lang import prepare_lang
    from asr_kd.lexicon import load_lexicon

    lm_text = read_json(paths.marker("prepare"))["summary"].get("lm_text") or None
    return prepare_lang(
        paths.lang, [paths.manifest(split) for split in SPLITS], Path(lm_text) if lm_text else None,
        load_lexicon(cfg.data.extra_lexicon or None), cfg.lang.sil_prob,
        cfg.lang.position_dependent_phones, cfg.data.oov_policy,
    )


def stage_align(cfg: RecipeConfig, paths: RunPaths) -> dict[str, Any]:
    """GMM-HMM forced alignment (built-in, or a Kaldi import) -> per-frame HMM-state (pdf) ids."""
    from asr_kd.align.stage import run_align

    return run_align(cfg, paths)


def stage_graph(cfg: RecipeConfig, paths: RunPaths) -> dict[str, Any]:
    """LM text (or decode.arpa) -> lm.arpa -> G.fst; with L, the tree and the model -> HCLG.fst."""
    from asr_kd.graph import run_graph_stage

    return run_graph_stage(cfg, paths)


def stage_decode(cfg: RecipeConfig, paths: RunPaths) -> dict[str, Any]:
    """Every system (teachers, ensemble, students, Table-5 runs, GMM) through HCLG -> WER."""
    from asr_kd.report import run_decode_stage

    return run_decode_stage(cfg, paths)


def stage_report(cfg: RecipeConfig, paths: RunPaths) -> dict[str, Any]:
    """Markers + decode summaries -> report.json, report.md, plots (Tables 1 and 5 beside the paper's)."""
    from asr_kd.report import run_report_stage

    return run_report_stage(cfg, paths)


def stage_teachers(cfg: RecipeConfig, paths: RunPaths) -> dict[str, Any]:
    """K teacher DNNs, resumable per teacher (teachers.only=k: one job-array task; stacked: all at once)."""
    from asr_kd.runs import stage_teachers as run_teachers

    return run_teachers(cfg, paths)


def stage_ensemble(cfg: RecipeConfig, paths: RunPaths) -> dict[str, Any]:
    """The K teachers as one batched ensemble: dev/test frame accuracy beside each teacher's."""
    from asr_kd.runs import stage_ensemble as run_ensemble

    return run_ensemble(cfg, paths)


def stage_distill(cfg: RecipeConfig, paths: RunPaths) -> dict[str, Any]:
    """One student per temperature from the ensemble (online, or cached targets on small corpora); Table-5 runs."""
    from asr_kd.runs import stage_distill as run_distill

    return run_distill(cfg, paths)


# Where and how a training stage runs, not what it computes: changing these never makes it stale.
WHERE_NOT_WHAT = tuple(f"!train.{key}" for key in TRAIN_WHERE_NOT_WHAT)

STAGES: list[Stage] = [
    Stage("prepare", stage_prepare, reads=("data",), after=(), doc="corpus -> manifests"),
    Stage("lang", stage_lang, reads=("data.oov_policy", "data.extra_lexicon", "lang"), after=("prepare",),
          doc="lexicon, phones.txt, words.txt, topology, L.fst"),
    Stage("features", stage_features,
          reads=("features.num_mel_bins", "features.frame_length_ms", "features.frame_shift_ms",
                 "features.num_ceps", "data.sample_rate"),
          after=("prepare",), doc="fbank + MFCC, CMVN stats"),
    Stage("align", stage_align, reads=("align", "features.num_ceps"), after=("lang", "features"),
          doc="GMM-HMM forced alignment (or Kaldi import) -> per-frame HMM-state ids"),
    Stage("shards", stage_shards, reads=("shards", "features.cmvn", "features.storage_dtype"),
          after=("features", "align"), doc="webdataset shards of normalised feats + labels"),
    Stage("teachers", stage_teachers,
          reads=("model", "train", *WHERE_NOT_WHAT, "teachers.num_teachers", "teachers.stacked",
                 "teachers.seed_base", "features.num_mel_bins"),
          after=("shards",), distributed=True,
          doc="K teacher DNNs (Lightning)"),
    Stage("ensemble", stage_ensemble, reads=("distill.ensemble_mean",), after=("teachers",),
          doc="average of the K teachers' soft targets"),
    Stage("distill", stage_distill, reads=("model", "train", *WHERE_NOT_WHAT, "distill"), after=("ensemble",),
          distributed=True,
          doc="students at each T; Table-5 3%-data runs"),
    Stage("graph", stage_graph,
          reads=("decode.lm_order", "decode.arpa", "decode.self_loop_scale", "decode.gmm_monophone", "lang"),
          after=("lang", "align"), doc="n-gram LM and HCLG"),
    Stage("decode", stage_decode, reads=("decode", "!decode.num_jobs"), after=("graph", "distill"), doc="hybrid decoding, WER"),
    Stage("report", stage_report, reads=(), after=("decode",), doc="report.json, report.md, plots"),
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
                   help="LibriSpeech-layout corpus root (with e.g. train-clean-100/, dev-clean/, test-clean/). "
                        "Without it the embedded synthetic corpus is generated once and used.")
    p.add_argument("--preset", default=DEFAULT_PRESET, choices=PRESETS,
                   help="preset: smoke (CI, minutes), tiny (the laptop demo), librispeech-100h, paper")
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
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def resolve_config(args: argparse.Namespace) -> RecipeConfig:
    overrides: dict[str, Any] = parse_set_args(args.overrides)
    if args.data_root is not None:
        overrides["data.root"] = str(Path(args.data_root).resolve())
    return load_config(args.preset, overrides)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
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
    rank0 = global_rank() == 0
    log_file: Path | None = None
    handler: logging.Handler | None = None
    try:
        with run_lock(paths.root, take=rank0):
            if rank0:
                handler, log_file = _log_to_file(paths), paths.recipe_log
            runner.check(args.stage, args.stop_stage, args.force)
            if rank0:
                _write_run_config(cfg, paths)
            runner.run(args.stage, args.stop_stage, args.force)
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
