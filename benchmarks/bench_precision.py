"""fp32 vs bf16 inference on a finished run: frame accuracy and agreement on the test split, and time.

    python benchmarks/bench_precision.py --exp-dir exp/tiny [--systems teacher-0,distilled_T2] [--max-utts 50]

Each system's test utterances go through its network twice, once in fp32 and once under
``torch.autocast(bfloat16)`` (``train.precision=bf16-mixed``), on this machine's device. Prints a
Markdown table: frame accuracy of each (against the alignment labels) with a 95 % paired
bootstrap interval of the difference over utterances, the share of frames whose best state
agrees, and seconds per pass. On a CPU without AMX / AVX512-BF16 the bf16 pass is emulated and
slow: use ``--max-utts``. This measures inference only; training parity needs bf16 hardware.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from asr_kd.config import from_dict
from asr_kd.stages._decode import discover_systems, read_split
from asr_kd.fileio import read_json
from asr_kd.nn.ensemble import load_teachers, utterance_log_posteriors
from asr_kd.nn.models import load_model
from asr_kd.paths import RunPaths
from asr_kd.decoding.stats import Bootstrap, UttCounts, paired_test


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--exp-dir", required=True)
    ap.add_argument("--systems", default="teacher-0,distilled_T2")
    ap.add_argument("--max-utts", type=int, default=50)
    args = ap.parse_args()
    paths = RunPaths(args.exp_dir)
    cfg = from_dict(read_json(paths.config))
    test = read_split(paths, "test", args.max_utts)
    wanted = args.systems.split(",")
    systems = {s.name: s for s in discover_systems(cfg, paths) if s.name in wanted}
    left, right = cfg.model.left_context, cfg.model.right_context
    print(f"{len(test.utts)} test utterances, {sum(len(test.labels[u]) for u in test.utts)} frames, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("| system | fp32 frame acc | bf16 frame acc | bf16 - fp32 [95 % CI] | same best state | fp32 s | bf16 s |")
    print("|---|---|---|---|---|---|---|")
    for name in wanted:
        system = systems.get(name)
        if system is None:
            print(f"| {name} | (not in this run) | | | | | |")
            continue
        model = (load_teachers(system.model_files, cfg.distill.ensemble_mean) if len(system.model_files) > 1
                 else load_model(system.model_files[0])[0])
        hits, secs, preds = {}, {}, {}
        for precision in ("32-true", "bf16-mixed"):
            t0 = time.time()
            out = {u: utterance_log_posteriors(model, torch.from_numpy(np.asarray(test.feats[u], np.float32)), left,
                                               right, precision=precision).argmax(1).numpy() for u in test.utts}
            secs[precision] = time.time() - t0
            preds[precision] = out
            hits[precision] = np.array([(out[u] == test.labels[u]).sum() for u in test.utts], dtype=float)
        frames = np.array([len(test.labels[u]) for u in test.utts], dtype=float)
        acc = {p: h.sum() / frames.sum() for p, h in hits.items()}
        boot, zeros = Bootstrap(test.utts), np.zeros(len(frames))
        reps = {p: boot.frame_acc(UttCounts(tuple(test.utts), zeros, zeros, h, frames)) for p, h in hits.items()}
        diff_ci = paired_test(reps["bf16-mixed"], reps["32-true"], acc["bf16-mixed"] - acc["32-true"])["ci"]
        agree = sum((preds["32-true"][u] == preds["bf16-mixed"][u]).sum() for u in test.utts) / frames.sum()
        print(f"| {name} | {100 * acc['32-true']:.2f} % | {100 * acc['bf16-mixed']:.2f} % | "
              f"{100 * (acc['bf16-mixed'] - acc['32-true']):+.2f} [{100 * diff_ci[0]:+.2f}, {100 * diff_ci[1]:+.2f}] | "
              f"{100 * agree:.1f} % | {secs['32-true']:.1f} | {secs['bf16-mixed']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
