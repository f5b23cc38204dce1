"""Peak memory and wall time of the align stage as the corpus grows (issue 14): the all-in-memory
aligner against subsets + chunked alignment, on a finished run's train split copied k times.

    python benchmarks/bench_align_memory.py --run-dir exp/tiny --out /tmp/align-mem --scales 1,4 \\
        --set align.mono_iters=4 --set align.tri_iters=4

``--run-dir``: a run whose prepare, lang and features stages are done. For each scale k, its
``prepare``, ``lang`` and ``features`` are copied to ``OUT/x<k>``; copies 2..k of every train
utterance get new speaker and utterance ids (``<speaker>x<c>``) and point at the same MFCC
matrices, so the align stage sees a train split k times as large. The stage then runs alone
(``--stage align --stop-stage align --force align``) once per mode:

* ``memory``: every split's features and graphs in memory (``align.chunk_utts=0``, all of train);
* ``chunked``: ``--chunked`` settings (default: monophone on the 300 shortest, triphones on 1200,
  chunks of 200 utterances; with ``align.context=monophone`` the triphone subset does not apply).

Prints one Markdown row per run from the stage marker: peak RSS of the stage process and of
its largest worker (``peak_rss_mb``, ``peak_rss_children_mb``), CPU seconds of the stage and its
workers (user + system: the number to compare on a shared machine) and wall time.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
from pathlib import Path

CHUNKED = ("align.mono_utts=300", "align.tri_utts=1200", "align.chunk_utts=200")


def scaled_copy(src: Path, dst: Path, k: int) -> int:
    """``dst``: ``src``'s prepare/lang/features with the train split ``k`` times; its utterance count."""
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    for name in ("prepare", "lang", "features", "config.json"):
        (shutil.copytree if (src / name).is_dir() else shutil.copy)(src / name, dst / name)
    manifest = dst / "prepare" / "manifest-train.jsonl"
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    scp = dst / "features" / "train" / "mfcc.scp"
    where = dict(line.split(" ", 1) for line in scp.read_text().splitlines() if line.strip())
    out_rows, out_scp = [], []
    for c in range(k):
        for row in rows:
            new = dict(row)
            if c:
                new["speaker"] = f"{row['speaker']}x{c}"
                new["id"] = new["speaker"] + row["id"][len(row["speaker"]):]
            out_rows.append(new)
            if row["id"] in where:
                out_scp.append(f"{new['id']} {where[row['id']]}\n")
    manifest.write_text("".join(json.dumps(r) + "\n" for r in out_rows))
    scp.write_text("".join(sorted(out_scp)))
    return len(out_rows)


def run_align(exp: Path, preset: str, sets: list[str]) -> tuple[dict, float]:
    """The align stage's marker, and the CPU seconds (user + system) of the stage and its workers."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    cmd = [sys.executable, "-m", "asr_kd.recipes.librispeech", "--preset", preset, "--exp-dir", str(exp),
           "--stage", "align", "--stop-stage", "align", "--force", "align"]
    for s in sets:
        cmd += ["--set", s]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return json.loads((exp / "align" / "DONE.json").read_text()), cpu


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-dir", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--scales", default="1,4")
    p.add_argument("--modes", default="memory,chunked")
    p.add_argument("--chunked", action="append", default=None, help="settings of the chunked mode (KEY=VALUE)")
    p.add_argument("--set", action="append", default=[], help="settings of every run (KEY=VALUE)")
    args = p.parse_args(argv)
    chunked = args.chunked or list(CHUNKED)
    print("| corpus | train utts | mode | peak RSS, stage process (MB) | peak RSS, largest worker (MB) | CPU (s) | wall (s) |")
    print("|---|---|---|---|---|---|---|")
    for k in (int(x) for x in args.scales.split(",")):
        for mode in args.modes.split(","):
            exp = args.out / f"x{k}-{mode}"
            n = scaled_copy(args.run_dir, exp, k)
            marker, cpu = run_align(exp, args.preset, args.set + (chunked if mode == "chunked" else []))
            print(f"| {k}x | {n} | {mode} | {marker['peak_rss_mb']:.0f} | {marker['peak_rss_children_mb']:.0f} "
                  f"| {cpu:.0f} | {marker['wall_time_s']:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
