"""Evaluate a finished run's systems on another test set, without retraining.

    python -m asr_kd.evaluate --exp-dir EXP --data-root CORPUS [--subset NAME] [--systems a,b] [--name NAME]

CORPUS is a LibriSpeech-layout directory (``<subset>/<speaker>/<chapter>/`` with FLAC/WAV files and
``*.trans.txt``), e.g. another synthetic corpus (``python -m data_prep.synthetic``) or LibriSpeech's
test-other. The run's settings are used throughout (features, CMVN, the GMM for frame labels,
each system's acoustic scale); results go to ``EXP/eval/<name>/report.{json,md}`` and nothing
else in EXP changes. A second call with the same data skips finished work.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

log = logging.getLogger("asr_kd.evaluate")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m asr_kd.evaluate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp-dir", required=True, help="a finished run (its decode stage done)")
    p.add_argument("--data-root", required=True, help="a LibriSpeech-layout corpus")
    p.add_argument("--subset", default="", help="the subset directory to evaluate on (default: the corpus's "
                                                "test subset: test-synth for a synthetic corpus, else test-clean)")
    p.add_argument("--systems", default="", help="comma-separated systems (default: every decoded DNN system)")
    p.add_argument("--name", default="", help="results go to EXP/eval/NAME (default: <corpus dir>-<subset>)")
    p.add_argument("--max-utts", type=int, default=0, help="evaluate on at most this many utterances (0: all)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    from asr_kd.config import ConfigError, from_dict
    from asr_kd.stages._evaluate import evaluate_systems, prepare_data, render_eval_markdown
    from asr_kd.envcheck import check_environment
    from asr_kd.fileio import read_json
    from asr_kd.paths import EvalDir, RunPaths
    from asr_kd.errors import InputError
    from data_prep.librispeech import CorpusError, read_corpus
    from data_prep.synthetic import MARKER_NAME

    problems = check_environment()
    for problem in problems:
        print(problem.line(), file=sys.stderr)
    if any(p.fatal for p in problems):
        return 3
    paths = RunPaths(Path(args.exp_dir))
    if not paths.config.exists():
        print(f"error: {paths.config} is missing; --exp-dir must be a run directory of the recipe", file=sys.stderr)
        return 2
    try:
        cfg = from_dict(read_json(paths.config))
    except ConfigError as e:  # e.g. a run made with a config key since retired (asr_kd.retired)
        print(f"error: {e}", file=sys.stderr)
        return 2
    root = Path(args.data_root)
    subset = args.subset or ("test-synth" if (root / MARKER_NAME).exists() else "test-clean")
    name = args.name or f"{root.resolve().name}-{subset}"
    try:
        corpus = read_corpus(root, {"test": (subset,)}, sample_rate=cfg.data.sample_rate, oov_policy="skip",
                             max_utts_per_split=args.max_utts)
        ep = EvalDir(paths.eval_dir(name))
        data = prepare_data(cfg, paths, ep, corpus.splits["test"])
        systems = [s for s in args.systems.split(",") if s] or None
        report = evaluate_systems(cfg, paths, ep, data, systems)
    except (CorpusError, InputError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    skipped = corpus.summary.get("skipped_total", 0)
    if skipped:
        log.warning("%d utterances of %s were skipped by the corpus reader (see the log above)", skipped, subset)
    print(render_eval_markdown(report))
    print(f"report: {ep.report_md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
