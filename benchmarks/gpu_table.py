"""The GPU check's table (markdown, for benchmarks/README.md) from the files benchmarks/gpu_check.sh wrote.

    python benchmarks/gpu_table.py OUT EXP MODE     # MODE: gpu or cpu (the reduced rehearsal)

A step whose output is missing (it failed or ran past its cap) is listed as such; its log is in OUT.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from asr_kd.recipes.estimate import H100_BF16_DENSE_FLOPS  # noqa: E402

H100_BF16_PEAK_GFLOPS = H100_BF16_DENSE_FLOPS / 1e9  # H100 SXM, bf16 dense


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except OSError:
        return []


def main(out: Path, exp: Path, mode: str) -> list[str]:
    env = " ".join(ln.strip() for ln in _lines(out / "env.txt") if ln.strip())
    md = [f"GPU check ({'on the GPU' if mode == 'gpu' else 'CPU rehearsal, reduced sizes'}): {env}", ""]
    md += ["| step | measure | value |", "|---|---|---|"]
    train = _json(out / "bench_train.json")
    for r in train or []:
        md.append(f"| 1. teacher step | {r['size']} {r['shape']}, frames/s | {r['train_frames_per_s']:,.0f} |")
        md.append(f"| 1. teacher step | {r['size']}: TFLOP/s; of the measured matmul peak; of 989 TFLOP/s (MFU) "
                  f"| {r['train_gflops'] / 1e3:.2f}; {r['of_best_peak']:.2f}; "
                  f"{r['train_gflops'] / H100_BF16_PEAK_GFLOPS:.3f} |")
        if "K" in r:
            md.append(f"| 1. teacher step | {r['size']}: {r['K']} stacked vs looped, training speed-up "
                      f"| {r['train_speedup']:.2f} |")
    if train is None:
        md.append("| 1. teacher step | missing | see bench_train.txt |")
    data = _json(out / "bench_data.json")
    for r in (data or {}).get("loader", []):
        w = str(r["workers"])
        old, new = r.get("old", {}).get(w), r.get("new", {}).get(w)
        md.append(f"| 2. loader | {r['preset']} ({r['model']}), windows/s with {w} workers: old; new; "
                  f"new / H100 demand at 50 % MFU ({r['demand']:,.0f}) | {old:,.0f}; {new:,.0f}; "
                  f"{new / r['demand']:.3g} |")
    if data is None:
        md.append("| 2. loader | missing | see bench_data.txt |")
    for ln in _lines(out / "recipe.log"):
        if "exit code" in ln:
            md.append(f"| 3. training stages | {ln.strip()} | |")
    for s in ("teachers", "ensemble", "distill"):
        done = _json(exp / s / "DONE.json")
        md.append(f"| 3. training stages | {s} wall s | {done.get('wall_time_s') if done else 'not finished'} |")
    cost = _json(out / "bench_targets_cost.json")
    for name, r in ((cost or {}).get("sizes") or {}).items():
        md.append(f"| 4. student step | {name}: hard; stored (x hard); online (x hard), ms "
                  f"| {r['hard_s'] * 1e3:.1f}; {r['stored_s'] * 1e3:.1f} ({r['stored_over_hard']:.2f}x); "
                  f"{r['online_s'] * 1e3:.1f} ({r['online_over_hard']:.2f}x) |")
    if cost is None:
        md.append("| 4. student step | missing | see bench_targets_cost.txt |")
    for dev in ("cuda", "cpu"):
        rows = [ln for ln in _lines(out / f"bench_decode_{dev}.txt") if ln.startswith("|") and "---" not in ln
                and "measure" not in ln]
        for ln in rows:
            cells = [c.strip() for c in ln.strip("|").split("|")]
            md.append(f"| 5. decode ({dev}) | {cells[0]} | {cells[1] if len(cells) > 1 else ''} |")
    md += ["", "Step times (s from the start): " + "; ".join(
        ln.strip("= ").strip() for ln in _lines(out / "steps.txt"))]
    if data is not None:
        md += ["", "Loader, as bench_data.py prints it:", ""]
        text = _lines(out / "bench_data.txt")
        md += [ln for ln in text if ln.startswith(("|", "new / old", "machine", "loader on"))]
    return md


if __name__ == "__main__":
    print("\n".join(main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3])))
