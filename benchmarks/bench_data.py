"""Data benchmark: feature extraction speed and frame-window loader throughput.

    python benchmarks/bench_data.py [--utts 200] [--frames 800] [--loader-workers 0 2]

Prints a table:
Everything runs with one torch thread (DataLoader workers use one thread each):
* fbank / MFCC extraction as x real time per core (seconds of audio per second of compute);
* windows/s of the streaming ``FrameWindowDataset`` (per DataLoader worker count) and of
  ``InMemoryWindows``, batch 256 and 1024, over synthetic shards (float16, 40-dim features).
Compare the windows/s with the training step's consumption (frames/s of the teachers).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from asr_kd.config import FeatureConfig
from asr_kd.data.features import fbank, mfcc
from asr_kd.data.manifest import Utterance
from asr_kd.data.shards import ShardWriter, encode_sample
from asr_kd.data.shards import shard_urls
from asr_kd.data.windows import FrameWindowDataset, InMemoryWindows
from asr_kd.fileio import write_json

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


def windows_per_second(batches, warmup: int = 2) -> float:
    it = iter(batches)
    n, t0 = 0, None
    for i, (x, _) in enumerate(it):
        if i == warmup:
            t0, n = time.perf_counter(), 0
        n += x.shape[0]
    if t0 is None:
        raise ValueError("too few batches to time; use more --utts")
    return n / (time.perf_counter() - t0)


def bench_loaders(urls: list[str], workers: list[int], batch_sizes: list[int]) -> list[tuple[str, str, float]]:
    rows = []
    for bs in batch_sizes:
        for w in workers:
            ds = FrameWindowDataset(urls, batch_size=bs, num_workers=w)
            rate = windows_per_second(DataLoader(ds, batch_size=None, num_workers=w))
            rows.append(("windows", f"iterable B={bs} workers={w}", rate))
        mem = InMemoryWindows(urls, batch_size=bs)
        rows.append(("windows", f"in-memory B={bs}", windows_per_second(mem)))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=30.0, help="audio per feature-extraction call")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--utts", type=int, default=200, help="utterances in the synthetic shards")
    p.add_argument("--frames", type=int, default=800, help="mean frames per utterance")
    p.add_argument("--loader-workers", type=int, nargs="+", default=[0, 2])
    args = p.parse_args()
    torch.set_num_threads(1)  # per-core numbers (DataLoader workers run one thread each too)
    rows = bench_features(args.seconds, args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        urls = make_shards(Path(tmp), args.utts, args.frames, utts_per_shard=25)
        rows += bench_loaders(urls, args.loader_workers, [256, 1024])
    print(f"{'what':<9} {'case':<30} {'rate':>12}")
    for kind, case, rate in rows:
        unit = "x real time/core" if kind == "features" else "windows/s"
        print(f"{kind:<9} {case:<30} {rate:>12,.0f}  {unit}")


if __name__ == "__main__":
    main()
