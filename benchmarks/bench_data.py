"""Data benchmark: feature extraction speed, and the window loader's supply against a GPU's demand.

    python benchmarks/bench_data.py [--path old|new|both] [--device cpu|cuda] [--presets smoke,tiny,...]

Everything runs with one torch thread per process (DataLoader workers use one thread each).

* fbank / MFCC extraction as x real time per core (seconds of audio per second of compute);
* for each preset's model: the loader's **supply**, training windows/s delivered *on the device*
  (``x`` (B, 26, 40) float32 there), over synthetic float16 shards, with the preset's batch size,
  loader (in memory for the synthetic presets, streamed for the LibriSpeech ones, by the
  ``train.in_memory_max_frames`` rule) and worker count; "per worker" is the streamed loader with
  one worker process (in memory: the main process alone). Each epoch is timed whole, from the
  loader's iterator to its last batch (worker start and shard reading included).
  The paths, measured in turns (old, new, old, new, ...; the best of ``--repeats`` each):
  - ``old``: the materialised batches (windows gathered in the dataset or its workers, float32),
    moved to the device as they are (Lightning's default transfer), as before issue 34;
  - ``new``: compact batches (``asr_kd.data.compact``), through the data module's own
    ``transfer_batch_to_device`` / ``on_after_batch_transfer`` hooks, as training runs them;
* beside it the **demand** of one H100 training that model at 50 % MFU: 0.5 x 989 TFLOP/s (H100
  SXM bf16 dense peak) / the model's matmul FLOPs per training frame (forward + backward, ~3x the
  forward: ``asr_kd.nn.models.dnn_train_flops_per_frame``; outputs = the preset's
  ``align.tri_leaves``), and supply / demand (> 1: the loader keeps up).

Prints markdown tables (the loader's is the one in benchmarks/README.md); ``--json`` writes the rows.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from asr_kd.recipes.estimate import H100_BF16_DENSE_FLOPS, corpus_of, load_costs
from asr_kd.config import FeatureConfig, load_config
from asr_kd.data.datamodule import FrameDataModule
from asr_kd.data.features import fbank, mfcc
from asr_kd.data.manifest import Utterance
from asr_kd.data.shards import ShardWriter, encode_sample
from asr_kd.data.shards import shard_urls
from asr_kd.data.windows import FrameWindowDataset, InMemoryWindows
from asr_kd.fileio import write_json
from asr_kd.nn.models import dnn_train_flops_per_frame

SR = 16000


def bench_features(seconds: float, repeats: int) -> list[tuple[str, str, float]]:
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * SR)) / SR
    audio = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(t.shape)).astype(np.float32)
    cfg = FeatureConfig()
    rows = []
    for name, fn in (("fbank 40", fbank), ("mfcc 13", mfcc)):
        fn(audio[:SR], SR, cfg)  # warm up
        t0 = time.perf_counter()
        for _ in range(repeats):
            fn(audio, SR, cfg)
        wall = time.perf_counter() - t0
        rows.append(("features", name, seconds * repeats / wall))
    return rows


def make_shards(out: Path, utts: int, frames: int, utts_per_shard: int) -> list[str]:
    rng = np.random.default_rng(0)
    writer = ShardWriter(out, utts_per_shard)
    for u in range(utts):
        n = int(rng.integers(frames // 2, frames * 3 // 2))
        feats = rng.standard_normal((n, 40)).astype(np.float16)
        labels = rng.integers(0, 2000, size=n)
        utt = Utterance(f"spk-1-{u:05d}", "spk", "1", "", "A", 1, SR)
        writer.add(encode_sample(utt, feats, labels), n)
    writer.flush()
    write_json(out / "index.json", {"shards": writer.shards})
    return shard_urls(out / "index.json")


PRESETS = ("smoke", "tiny", "librispeech-100h", "paper")
H100_BF16_PEAK = H100_BF16_DENSE_FLOPS  # FLOP/s, H100 SXM, bf16 dense (no sparsity)
MFU = 0.5


def machine() -> str:
    """The CPU model (and the GPU, if any), the cores this process may use, the load average."""
    name = platform.processor() or platform.machine()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        name = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), name)
    except OSError:
        pass
    gpu = f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return f"{name}, {len(os.sched_getaffinity(0))} cores{gpu}"


def load() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


def preset_case(name: str) -> dict[str, Any]:
    """What the preset trains (the model, its demand) and how its training set is loaded."""
    cfg = load_config(name)
    m, t = cfg.model, cfg.train
    width = m.left_context + 1 + m.right_context
    flops = dnn_train_flops_per_frame(width * 40, m.hidden_layers, m.hidden_dim, cfg.align.tri_leaves)
    in_memory = corpus_of(cfg, load_costs()).get("train").frames <= t.in_memory_max_frames  # the preset's corpus
    return {"preset": name, "model": f"{m.hidden_layers} x {m.hidden_dim} -> {cfg.align.tri_leaves}",
            "mflop_per_frame": flops / 1e6, "demand": MFU * H100_BF16_PEAK / flops, "batch": t.batch_size,
            "in_memory": in_memory, "workers": 0 if in_memory else t.num_workers,
            "shuffle_buffer_utts": t.shuffle_buffer_utts}


def supply(urls: list[str], case: dict[str, Any], workers: int, path: str, device: torch.device) -> float:
    """Training windows/s on ``device`` over one epoch of the training loader (``path`` old or new)."""
    common = dict(batch_size=case["batch"], shuffle=True, seed=0, shuffle_buffer_utts=case["shuffle_buffer_utts"])
    ds = (InMemoryWindows(urls, **common) if case["in_memory"]
          else FrameWindowDataset(urls, num_workers=workers, **common))
    dm = FrameDataModule(ds, ds, batch_size=case["batch"], num_workers=workers, compact_batches=path == "new")
    loader = dm.train_dataloader()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    n, t0 = 0, time.perf_counter()
    for batch in loader:
        batch = dm.on_after_batch_transfer(dm.transfer_batch_to_device(batch, device, 0), 0)
        n += batch["x"].shape[0]
    sync()
    return n / (time.perf_counter() - t0)


def bench_supply(urls: list[str], presets: list[str], paths: list[str], device: torch.device,
                 repeats: int) -> list[dict[str, Any]]:
    rows = []
    for name in presets:
        case = preset_case(name)
        counts = sorted({1, case["workers"]}) if not case["in_memory"] else [0]
        for workers in counts:
            best = {p: 0.0 for p in paths}
            for _ in range(repeats):  # in turns, so that the machine's load hits both paths alike
                for p in paths:
                    best[p] = max(best[p], supply(urls, case, workers, p, device))
            for p in paths:
                case.setdefault(p, {})[workers] = best[p]
        rows.append(case)
    return rows


def loader_table(rows: list[dict[str, Any]], paths: list[str]) -> list[str]:
    """The markdown table: per preset and path, supply per worker and with the preset's workers,
    beside the demand of one H100 at 50 % MFU."""
    out = ["| preset | model (MFLOP / train frame) | H100 demand, windows/s | loader, batch | path "
           "| supply per worker | supply, preset's workers | supply / demand |",
           "|---|---|---:|---|---|---:|---:|---:|"]
    for r in rows:
        loader = "in memory" if r["in_memory"] else f"streamed, {r['workers']} workers"
        for p in paths:
            rates = r[p]
            one = rates[0] if r["in_memory"] else rates[1]
            full = rates[r["workers"]]
            out.append(f"| {r['preset']} | {r['model']} ({r['mflop_per_frame']:,.0f}) | {r['demand']:,.0f} "
                       f"| {loader}, {r['batch']} | {p} | {one:,.0f} | {full:,.0f} | {full / r['demand']:.3g} |")
    if len(paths) == 2:
        out.append("")
        out.append("new / old, with the preset's workers: " + ", ".join(
            f"{r['preset']} {r['new'][r['workers']] / r['old'][r['workers']]:.2f}x" for r in rows))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=30.0, help="audio per feature-extraction call")
    p.add_argument("--repeats", type=int, default=2, help="epochs timed per path and case (the best is kept)")
    p.add_argument("--utts", type=int, default=400, help="utterances in the synthetic shards")
    p.add_argument("--frames", type=int, default=800, help="mean frames per utterance")
    p.add_argument("--path", choices=("old", "new", "both"), default="both")
    p.add_argument("--device", default="cpu", help="where the batches go (cpu, cuda)")
    p.add_argument("--presets", default=",".join(PRESETS))
    p.add_argument("--no-features", action="store_true", help="skip the feature-extraction rows")
    p.add_argument("--json", type=Path, help="write the rows here")
    args = p.parse_args()
    torch.set_num_threads(1)  # per-core numbers (DataLoader workers run one thread each too)
    device = torch.device(args.device)
    paths = ["old", "new"] if args.path == "both" else [args.path]
    print(f"machine: {machine()}; torch {torch.__version__}; load average at start {load()}")
    features = [] if args.no_features else bench_features(args.seconds, 5)
    for _, case, rate in features:
        print(f"features {case}: {rate:,.0f} x real time per core")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        urls = make_shards(Path(tmp), args.utts, args.frames, utts_per_shard=25)
        rows = bench_supply(urls, args.presets.split(","), paths, device, args.repeats)
    print(f"\nloader on {device} ({args.utts} utterances, ~{args.utts * args.frames:,} frames; H100 demand at "
          f"{MFU:.0%} of {H100_BF16_PEAK / 1e12:.0f} TFLOP/s bf16 dense; {time.perf_counter() - t0:.0f} s; "
          f"load average at end {load()}):\n")
    print("\n".join(loader_table(rows, paths)))
    if args.json:
        write_json(args.json, {"machine": machine(), "device": str(device), "features": features, "loader": rows})


if __name__ == "__main__":
    main()
