"""The scale rehearsal: the whole recipe on the synthetic corpus at 1x (tiny) and 4x (small), stage
by stage, measured; the growth of each stage's cost with the corpus; and ``--estimate``'s
prediction of the 4x run from the 1x figures alone against what the 4x run took.

    python benchmarks/bench_scale.py [--sizes tiny small] [--exp-root /tmp/asr-kd-scale]
                                     [--out benchmarks/scale] [--write-costs] [--set KEY=VALUE ...]

(or ``make bench-scale``). The settings are the tiny preset's, shaped like the librispeech-100h
preset's where it matters for cost and scaled down where CPU training demands it (``REHEARSAL``):
separately trained teachers (not stacked), two of them, fixed epoch counts (no newbob), one
student temperature. Each stage runs as its own process (``--stage S --stop-stage S``), so its
peak memory is its own: the sum of the proportional set sizes of the process group, sampled every
0.25 s (forked decoders share their graph; PSS counts shared pages once). CPU seconds are the
stage's own and its children's (``wait4``); disk is what the stage added under the run directory.
The synthetic corpus is generated before the clock starts (its generation is not a stage cost a
LibriSpeech user pays).

``--write-costs`` writes ``asr_kd/reference_costs.json`` from the first size (the file
``--estimate`` predicts from).
Results: ``<out>/scale.json`` and ``<out>/scale.md`` (the tables of benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from asr_kd.recipes import estimate  # noqa: E402
from asr_kd.config import load_config, parse_set_args  # noqa: E402
from asr_kd.fileio import read_json, write_json  # noqa: E402

REHEARSAL = ("teachers.num_teachers=2", "teachers.stacked=false", "train.max_epochs=2", "distill.temperatures=2",
             "distill.student_max_epochs=2", "distill.lr_schedule=cosine", "distill.subset_max_epochs=2")
STAGE_NAMES = ("prepare", "lang", "features", "align", "shards", "teachers", "ensemble", "distill", "graph", "decode",
               "conditions", "export", "report")
SIZE_SCALE = {"smoke": 0.25, "tiny": 1, "small": 4}  # training utterances relative to tiny (1,200)


# ---------------------------------------------------------------------------------------------
# Measuring one process group
# ---------------------------------------------------------------------------------------------
def _group_pss_kb(pgid: int) -> int:
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
            if int(stat[stat.rindex(b")") + 2 :].split()[2]) != pgid:  # fields after "(comm) ": state ppid pgrp
                continue
            with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
                for line in f:
                    if line.startswith(b"Pss:"):
                        total += int(line.split()[1])
                        break
        except (OSError, ValueError, IndexError):
            continue  # the process ended meanwhile
    return total


def run_measured(cmd: list[str], log_path: Path) -> dict[str, float]:
    """Run ``cmd`` in its own process group; wall, CPU (self + children) and peak group PSS."""
    peak = [0]
    with open(log_path, "ab") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT)
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], _group_pss_kb(proc.pid))
                done.wait(0.25)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        done.set()
        sampler.join()
    rc = os.waitstatus_to_exitcode(status)
    if rc != 0:
        raise SystemExit(f"{' '.join(cmd)} failed with exit status {rc}; see {log_path}")
    return {"wall_s": round(wall, 2), "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
            "peak_rss_mb": round(peak[0] / 1024, 1), "max_process_rss_mb": round(usage.ru_maxrss / 1024, 1)}


def disk_bytes(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
            except OSError:
                continue
    return total


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu in ("", platform.machine(), "x86_64"):
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    import torch

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    return {"cpu": cpu, "cores": os.cpu_count(), "bf16": sorted(flags & {"avx512_bf16", "amx_bf16"}),
            "torch": torch.__version__, "python": platform.python_version(), "commit": commit.strip() or "unknown",
            "date": time.strftime("%Y-%m-%d")}


# ---------------------------------------------------------------------------------------------
# One size
# ---------------------------------------------------------------------------------------------
def overrides(size: str, extra: list[str]) -> list[str]:
    return [*REHEARSAL, f"data.synthetic_size={size}", *extra]


def rehearse(size: str, exp: Path, extra: list[str], log_path: Path) -> dict[str, Any]:
    """Every stage of one size, each in its own process; per-stage measurements."""
    if exp.exists():  # finished training runs would be reused: the rehearsal starts from nothing
        shutil.rmtree(exp)
    sets = overrides(size, extra)
    cfg = load_config("tiny", parse_set_args(sets))
    corpus_dir = Path(cfg.data.synthetic_dir) / f"synthetic-{size}-seed{cfg.data.synthetic_seed}"
    subprocess.run([sys.executable, "-m", "data_prep.synthetic", "--out", str(corpus_dir), "--size", size,
                    "--seed", str(cfg.data.synthetic_seed)], check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL)  # off the clock
    base = [sys.executable, "-m", "asr_kd.recipes.librispeech", "--preset", "tiny", "--exp-dir", str(exp)]
    for s in sets:
        base += ["--set", s]
    stages: dict[str, Any] = {}
    startup = run_measured([sys.executable, "-c", "import torch, lightning, asr_kd.recipes.librispeech"], log_path)
    print(f"  {size} process start {startup['wall_s']:.1f} s", flush=True)
    for stage in STAGE_NAMES:
        before = disk_bytes(exp) if exp.exists() else 0
        m = run_measured([*base, "--stage", stage, "--stop-stage", stage, "--force", stage], log_path)
        m["disk_mb"] = round((disk_bytes(exp) - before) / 2**20, 2)
        stages[stage] = m
        print(f"  {size} {stage:<10} {m['wall_s']:8.1f} s  cpu {m['cpu_s']:8.1f} s  pss {m['peak_rss_mb']:7.0f} MB "
              f" disk {m['disk_mb']:8.1f} MB", flush=True)
    loader = loader_supply(exp)
    print(f"  {size} loader {loader['windows_per_s_per_worker']:,} windows/s per worker", flush=True)
    return {"size": size, "sets": sets, "exp": str(exp), "startup": startup, "stages": stages, "loader": loader,
            "corpus": corpus_from_run(exp),
            "term_shares": term_shares(exp, stages)}


def loader_supply(exp: Path) -> dict[str, Any]:
    """Training windows/s of one loader worker (the recipe's loader, streamed, batch 1,024) over the
    run's own training shards, on the CPU: what ``--estimate`` feeds a device with per worker."""
    import torch
    from bench_data import supply

    from asr_kd.data.shards import shard_urls

    urls = shard_urls(exp / "shards" / "train" / "index.json")
    case = {"batch": 1024, "in_memory": False, "shuffle_buffer_utts": 2000}
    best = max(supply(urls, case, 1, "new", torch.device("cpu")) for _ in range(2))
    return {"windows_per_s_per_worker": round(best), "batch": 1024, "workers": 1, "measured_on": "cpu"}


def corpus_from_run(exp: Path) -> dict[str, Any]:
    """The corpus the run read (from its prepare and graph markers)."""
    prep = read_json(exp / "prepare" / "DONE.json")["summary"]["splits"]
    graph = read_json(exp / "graph" / "DONE.json")["summary"]
    return {"splits": {s: {"utts": v["utterances"], "hours": v["hours"]} for s, v in prep.items()},
            "lm_ngrams": sum(graph["lm"]["ngrams"]), "num_pdfs": read_json(exp / "align" / "DONE.json")["summary"]["num_pdfs"]}


def term_shares(exp: Path, stages: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The share of a stage's wall time each of its terms took, where the stage reports it: align's
    triphone passes (``tri_train_s``), decode's network forward (each system's ``forward_s``)."""
    out = {}
    align = read_json(exp / "align" / "DONE.json")["summary"]
    tri = min(align.get("tri_train_s", 0.0) / stages["align"]["wall_s"], 1.0)
    out["align"] = {"tri_frame_passes": tri, "frame_passes": 1.0 - tri}
    fwd = sum(read_json(p).get("forward_s", 0.0) for p in (exp / "decode").glob("*/summary.json"))
    f = min(fwd / stages["decode"]["wall_s"], 1.0)
    out["decode"] = {"forward_flops": f, "search_audio_hours": 1.0 - f}
    return out


def corpus_object(run: dict[str, Any]) -> estimate.Corpus:
    c = run["corpus"]
    return estimate.Corpus({s: estimate.Split(v["utts"], v["hours"]) for s, v in c["splits"].items()},
                           f"synthetic {run['size']}", lm_ngrams=c["lm_ngrams"])


def costs_from(run: dict[str, Any], mach: dict[str, Any]) -> dict[str, Any]:
    cfg = load_config("tiny", parse_set_args(run["sets"]))
    costs = estimate.reference_costs(cfg, corpus_object(run), run["stages"], mach, run["term_shares"],
                                     startup_s=run["startup"]["wall_s"], startup_cpu_s=run["startup"]["cpu_s"],
                                     startup_rss_mb=run["startup"]["peak_rss_mb"], num_pdfs=run["corpus"]["num_pdfs"])
    if "loader" in run:
        costs["loader"] = run["loader"]
    return costs


# ---------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------
def tables(runs: list[dict[str, Any]], mach: dict[str, Any], predicted: list[estimate.StageEstimate] | None) -> str:
    hours = [sum(v["hours"] for v in r["corpus"]["splits"].values()) for r in runs]
    lines = [f"Machine: {mach['cpu']}, {mach['cores']} cores, bf16 {'/'.join(mach['bf16']) or 'no'}, torch "
             f"{mach['torch']}, commit {mach['commit']}, {mach['date']}. Audio hours (all splits): "
             + ", ".join(f"{r['size']} {h:.2f}" for r, h in zip(runs, hours)) + ".", ""]
    sizes = " / ".join(r["size"] for r in runs)
    lines.append(f"| stage | wall s ({sizes}) | exponent | CPU s per audio h ({sizes}) | peak PSS MB ({sizes}) "
                 f"| disk MB per audio h ({sizes}) |")
    lines.append("|---|---|---|---|---|---|")
    scale = hours[-1] / hours[0] if len(runs) > 1 else 1.0
    for stage in STAGE_NAMES:
        ms = [r["stages"][stage] for r in runs]
        exp_txt = (f"{estimate.growth_exponent(ms[0]['wall_s'], ms[-1]['wall_s'], scale):.2f}"
                   if len(runs) > 1 and ms[0]["wall_s"] >= 1 else "-")
        wall = " / ".join(f"{m['wall_s']:.1f}" for m in ms)
        cpu = " / ".join(f"{m['cpu_s'] / h:.0f}" for m, h in zip(ms, hours))
        pss = " / ".join(f"{m['peak_rss_mb']:.0f}" for m in ms)
        disk = " / ".join(f"{m['disk_mb'] / h:.0f}" for m, h in zip(ms, hours))
        lines.append(f"| {stage} | {wall} | {exp_txt} | {cpu} | {pss} | {disk} |")
    tot = [sum(m["wall_s"] for m in r["stages"].values()) for r in runs]
    if len(runs) > 1:
        total = " / ".join(f"{t:.0f}" for t in tot)
        lines.append(f"| total | {total} | {estimate.growth_exponent(tot[0], tot[-1], scale):.2f} | | | |")
    else:
        lines.append(f"| total | {tot[0]:.0f} | | | | |")
    if predicted:
        last = runs[-1]
        lines += ["", f"`--estimate` for the {last['size']} run from the {runs[0]['size']} run's figures alone:", "",
                  "| stage | predicted wall s | measured wall s | error | predicted peak PSS MB | measured |",
                  "|---|---|---|---|---|---|"]
        for p in predicted:
            m = last["stages"][p.stage]
            err = (p.wall_s - m["wall_s"]) / m["wall_s"] if m["wall_s"] else 0.0
            flag = " (over 30 s)" if m["wall_s"] > 30 else ""
            lines.append(f"| {p.stage} | {p.wall_s:.1f} | {m['wall_s']:.1f}{flag} | {100 * err:+.0f} % "
                         f"| {p.peak_rss_mb:.0f} | {m['peak_rss_mb']:.0f} |")
    return "\n".join(lines)


def predict_last(runs: list[dict[str, Any]], mach: dict[str, Any]) -> list[estimate.StageEstimate]:
    """The last size's stages predicted from the first size's costs alone (its corpus from the
    generator's utterance counts and the first run's seconds per utterance)."""
    costs = costs_from(runs[0], mach)
    cfg = load_config("tiny", parse_set_args(runs[-1]["sets"]))
    corpus = estimate.corpus_of(cfg, costs)
    return estimate.predict(cfg, corpus, costs, cores=mach["cores"], stages=STAGE_NAMES)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", nargs="+", default=["tiny", "small"], choices=list(SIZE_SCALE))
    p.add_argument("--exp-root", default="/tmp/asr-kd-scale")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "scale"))
    p.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--write-costs", action="store_true", help="write asr_kd/reference_costs.json from the first size")
    p.add_argument("--reuse", action="store_true", help="read <out>/scale.json instead of running (tables only)")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.reuse:
        saved = read_json(out / "scale.json")
        runs, mach = saved["runs"], saved["machine"]
    else:
        mach = machine()
        runs = []
        for size in args.sizes:
            exp = Path(args.exp_root) / size
            print(f"rehearsal {size} -> {exp}", flush=True)
            runs.append(rehearse(size, exp, args.extra, out / f"{size}.log"))
            write_json(out / "scale.json", {"machine": mach, "runs": runs})
    predicted = predict_last(runs, mach) if len(runs) > 1 else None
    md = tables(runs, mach, predicted)
    (out / "scale.md").write_text(md + "\n")
    print(md)
    if args.write_costs:
        costs = costs_from(runs[0], mach)
        write_json(ROOT / "asr_kd" / estimate.COSTS_FILE, costs)
        print(f"wrote {ROOT / 'asr_kd' / estimate.COSTS_FILE}")


if __name__ == "__main__":
    main()
