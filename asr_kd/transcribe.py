"""Transcribe audio files with an exported model directory.

    python -m asr_kd.transcribe MODEL_DIR AUDIO [AUDIO ...]            # utt-id transcript, a line each
    python -m asr_kd.transcribe --exp-dir EXP [--system NAME] AUDIO ... # EXP/models/NAME (default: best student)
    python -m asr_kd.transcribe MODEL_DIR AUDIO --json                 # JSON lines: words with times, RTF
    python -m asr_kd.transcribe MODEL_DIR AUDIO --backend onnx         # am.onnx through onnxruntime (CPU)

Any format soundfile reads, any sample rate (resampled to the model's). Only the model directory
is read (:mod:`asr_kd.decoding.modeldir`): no config, no run directory, no Lightning. A file that
cannot be read is named on stderr and skipped; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m asr_kd.transcribe", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", metavar="[MODEL_DIR] AUDIO",
                   help="a model directory (<exp>/models/<system>) then audio files; with --exp-dir only audio")
    p.add_argument("--exp-dir", help="a finished run: use its exported model directory <exp>/models/<system>")
    p.add_argument("--system", help="with --exp-dir: which system (default: the best student on dev)")
    p.add_argument("--json", action="store_true", help="one JSON object a line: text, words with start/end "
                                                       "seconds, ok, duration, rtf")
    p.add_argument("--beam", type=float, help="search beam (default: the run's decode.beam, in model.json)")
    p.add_argument("--max-active", type=int, help="max active states (default: the run's decode.max_active)")
    p.add_argument("--acoustic-scale", type=float, help="override the scale chosen on dev")
    p.add_argument("--backend", choices=("torchscript", "onnx"), default="torchscript",
                   help="run the network as am.pt with torch (default) or as am.onnx with onnxruntime on CPU")
    return p


def resolve_model_dir(args: argparse.Namespace) -> tuple[Path, list[str]]:
    """(model directory, audio files) from the command line."""
    if not args.exp_dir:
        if len(args.paths) < 2:
            raise SystemExit("error: give a model directory and at least one audio file (or --exp-dir EXP)")
        return Path(args.paths[0]), args.paths[1:]
    models = Path(args.exp_dir) / "models"
    system = args.system
    if not system:
        index = models / "index.json"
        if not index.exists():
            raise SystemExit(f"error: {index} is missing; run the export stage "
                             f"(python -m asr_kd.recipes.librispeech --exp-dir {args.exp_dir} --stage export)")
        system = json.loads(index.read_text()).get("default")
    return models / str(system), args.paths


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)
    model_dir, audio = resolve_model_dir(args)
    from asr_kd.decoding.modeldir import ModelDirError, Transcriber

    try:
        tr = Transcriber(model_dir, beam=args.beam, max_active=args.max_active, acoustic_scale=args.acoustic_scale,
                         backend=args.backend)
    except (ModelDirError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    failed = 0
    seen: dict[str, int] = {}
    for path in audio:
        utt = Path(path).stem
        seen[utt] = seen.get(utt, 0) + 1
        if seen[utt] > 1:  # two files with one stem: keep the ids apart
            utt = f"{utt}-{seen[utt]}"
        try:
            result = tr.transcribe(path, utt)
        except ModelDirError as e:
            print(f"error: {e}; skipped", file=sys.stderr)
            failed += 1
            continue
        if not result.ok:
            print(f"warning: {path}: no complete path through the graph; the best partial path is given",
                  file=sys.stderr)
        print(json.dumps(result.as_json()) if args.json else f"{result.utt} {result.text}".rstrip(), flush=True)
    if failed:
        print(f"{failed} of {len(audio)} files could not be read", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
