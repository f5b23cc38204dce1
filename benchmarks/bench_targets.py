"""Stored sparse soft targets (distill.targets=stored) against dense ones: fidelity and cost.

    # fidelity, on a finished tiny run (teachers + shards): KL(dense || stored) per k and T, and
    # students trained from stored top-k targets vs dense targets (same seed, tiny's student rule)
    python benchmarks/bench_targets.py fidelity --exp exp/tiny --ks 4,16,64 --epochs 3
    # cost: time per student step, hard targets vs stored vs online, tiny and paper model sizes
    python benchmarks/bench_targets.py cost --steps 30 --online-steps 5

``fidelity`` writes the targets once with the largest k (a top-k list is sorted, so each smaller
k is its prefix: the students of smaller k read the first k columns) under ``--out``; the dense
student is the recipe's cached path (p_ens(T) in memory, the same targets as online).
KL(dense || stored) reads the stored form as a distribution: the top k as stored, the tail mass
spread evenly over the other N - k states; it is measured on every frame of the first
``--kl-utts`` training utterances.

``cost`` times plain optimiser steps (Adam, batch ``--batch``, the recipe's precision: bf16 autocast
where the device runs it fast) on random data: hard-target CE; stored (CE + the top-k + tail soft
term); online (CE + the dense soft term from K frozen teachers' forward, no grad). Hard and stored
steps are timed in turns and their medians compared, so a change of load cannot favour either. Bytes per frame and the projected storage for 960 h (360 M frames,
4 temperatures) are printed beside them.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from asr_kd.nn.losses import SparseTargets, distillation_loss, sparse_tail
from asr_kd.nn.models import AcousticDNN, StackedDNN
from asr_kd.nn.precision import resolve_precision

SIZES = {"tiny": (3, 320, 460), "paper": (8, 2560, 14000)}  # hidden layers, dim, states
FRAMES_960H = 360e6
TEMPS = (1.0, 2.0, 5.0, 10.0)


# ---------------------------------------------------------------------------------------------
# fidelity
# ---------------------------------------------------------------------------------------------
def _kl_table(ens: Any, urls: list[str], ks: list[int], left: int, right: int, utts: int) -> dict[str, Any]:
    from asr_kd.data.shards import iter_utterances
    from asr_kd.data.windows import utterance_windows
    from asr_kd.nn.ensemble import ensemble_probs
    from asr_kd.nn.soft_targets import kl_to_dense, topk_targets

    sums = {(k, T): 0.0 for k in ks for T in TEMPS}
    frames = 0
    with torch.no_grad():
        for n, rec in enumerate(iter_utterances(urls)):
            if n == utts:
                break
            logits = ens(utterance_windows(torch.from_numpy(rec.feats), left, right))
            for T in TEMPS:
                p = ensemble_probs(logits, T, ens.mean)
                for k in ks:
                    sums[k, T] += float(kl_to_dense(p, *topk_targets(p, k)).double().sum())
            frames += rec.feats.shape[0]
    return {"frames": frames, "kl": {f"k={k}": {f"T={T:g}": sums[k, T] / frames for T in TEMPS} for k in ks}}


def _student(cfg: Any, paths: Any, ens: Any, dm: Any, run_dir: Path, *, T: float, k: int | None,
             cached: torch.Tensor | None, epochs: int) -> dict[str, Any]:
    from asr_kd.config import to_dict
    from asr_kd.stages._training import arch, student_train_config
    from asr_kd.nn.systems import DistillSystem
    from asr_kd.nn.target_sources import CachedTargets, StoredTargets
    from asr_kd.nn.train import train_run

    class PrefixK(StoredTargets):
        """Reads the first k of the stored top-k columns (a smaller k from the same shards)."""

        def targets(self, batch: dict[str, torch.Tensor]) -> SparseTargets:
            if k is not None:
                batch = {**batch, "topk_ids": batch["topk_ids"][..., :k], "topk_p": batch["topk_p"][..., :k]}
            return super().targets(batch)

    train = student_train_config(cfg)
    student = AcousticDNN(**arch(cfg, ens.num_pdfs, student=True), seed=train.seed)
    source = CachedTargets(cached, T) if cached is not None else PrefixK(0, T)
    system = DistillSystem(student, source, train, hard_weight=cfg.distill.hard_weight, max_epochs=epochs,
                           run_config=to_dict(cfg))
    t0 = time.perf_counter()
    m = train_run(system, dm, train, run_dir, key=f"bench-{k}-{T}-{epochs}", max_epochs=epochs,
                  early_stopping_patience=train.early_stopping_patience, progress_bar=False)
    return {"dev": m.get("dev_frame_acc"), "test": m.get("test_frame_acc"), "epochs": m.get("epochs"),
            "wall_s": round(time.perf_counter() - t0, 1)}


def fidelity(args: argparse.Namespace) -> dict[str, Any]:
    import dataclasses

    from asr_kd.config import from_dict
    from asr_kd.data.datamodule import shard_datamodule
    from asr_kd.data.shards import read_index, shard_urls
    from asr_kd.fileio import read_json
    from asr_kd.stages._training import _target_cache, load_ensemble
    from asr_kd.nn.soft_targets import write_soft_targets
    from asr_kd.paths import RunPaths

    paths = RunPaths(Path(args.exp))
    cfg = from_dict(read_json(paths.config))
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, precision="32-true"))
    ens = load_ensemble(cfg, paths)
    ks = sorted(int(k) for k in args.ks.split(","))
    urls = shard_urls(paths.shard_index("train"))
    left, right = cfg.model.left_context, cfg.model.right_context
    out: dict[str, Any] = {"exp": str(paths.root), "num_pdfs": ens.num_pdfs,
                           "train_frames": read_index(paths.shard_index("train"))["frames"]}
    t0 = time.perf_counter()
    out["kl_to_dense"] = _kl_table(ens, urls, ks, left, right, args.kl_utts)
    out["kl_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out["kl_to_dense"], indent=1), flush=True)
    if args.epochs <= 0:
        return out
    T = args.T
    target_dir = Path(args.out) / "targets"
    t0 = time.perf_counter()
    index = write_soft_targets(ens, urls, target_dir, key=f"bench-{max(ks)}-{T}", temperatures=[T], k=max(ks),
                               left=left, right=right, device=torch.device("cpu"), precision="32-true")
    out["write_s"] = round(time.perf_counter() - t0, 1)
    out["bytes_per_frame_kmax"] = index["bytes_per_frame"]
    students: dict[str, Any] = {}
    dm = shard_datamodule(paths.shard_indexes(), cfg.model, cfg.train, return_ids=True)
    cache = _target_cache(cfg, ens, dm, [T])[float(T)]
    students["dense"] = _student(cfg, paths, ens, dm, Path(args.out) / "dense", T=T, k=None, cached=cache,
                                 epochs=args.epochs)
    print("dense", students["dense"], flush=True)
    del cache, dm
    dm = shard_datamodule(paths.shard_indexes(), cfg.model, cfg.train, targets_dir=target_dir)
    for k in ks:
        students[f"k={k}"] = _student(cfg, paths, ens, dm, Path(args.out) / f"k{k}", T=T, k=k, cached=None,
                                      epochs=args.epochs)
        print(f"k={k}", students[f"k={k}"], flush=True)
    out["students"] = {"T": T, "epochs": args.epochs, **students}
    return out


# ---------------------------------------------------------------------------------------------
# cost
# ---------------------------------------------------------------------------------------------
def _time_interleaved(fns: dict[str, Any], steps: int, device: torch.device, warmup: int = 2) -> dict[str, float]:
    """Median seconds per call of each function, timed in turns (a, b, a, b, ...) so that a change
    in the machine's load hits every one alike."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(steps):
        for name, fn in fns.items():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def _time_steps(step: Any, steps: int, device: torch.device, warmup: int = 2) -> float:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return (time.perf_counter() - t0) / steps


def _cost_size(name: str, args: argparse.Namespace) -> dict[str, Any]:
    layers, dim, n = SIZES[name]
    b, k, T, K = (args.batch if name == "tiny" else args.paper_batch), args.k, 2.0, args.teachers
    dev = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(b, 26, 40, generator=g).to(dev)
    y = torch.randint(0, n, (b,), generator=g).to(dev)
    student = AcousticDNN(26 * 40, layers, dim, n, seed=0).to(dev)
    opt = torch.optim.Adam(student.parameters(), lr=1e-4, fused=True)
    teachers = StackedDNN(list(range(K)), 26 * 40, layers, dim, n).requires_grad_(False).eval().to(dev)
    with torch.no_grad():
        p = F.softmax(teachers(x) / T, dim=-1).mean(0)  # (B, N) for the stored targets' content
    q, idx = torch.topk(p, k, dim=-1)

    bf16 = resolve_precision(args.precision, dev.type) == "bf16-mixed"

    def forward(net: Any) -> torch.Tensor:
        if not bf16:
            return net(x)
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            return net(x)

    def optimise(loss_fn: Any) -> Any:
        def step() -> None:
            opt.zero_grad(set_to_none=True)
            loss_fn(forward(student)).backward()
            opt.step()
        return step

    hard = optimise(lambda z: F.cross_entropy(z, y))
    def stored_loss(z: torch.Tensor) -> torch.Tensor:
        q16 = q.half().float()
        return distillation_loss(z, y, SparseTargets(idx, q16, sparse_tail(q16)), T, 0.5)

    stored = optimise(stored_loss)

    def online_loss(z: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = F.softmax(forward(teachers).float() / T, dim=-1).mean(0)  # the K teachers' forward, every step
        return distillation_loss(z, y, target, T, 0.5)

    online = optimise(online_loss)
    steps = args.steps if name == "tiny" else args.paper_steps
    res = {"size": f"{layers} x {dim} -> {n}", "batch": b, "k": k, "teachers": K, "bf16": bf16,
           **{f"{m}_s": v for m, v in _time_interleaved({"hard": hard, "stored": stored}, steps, dev).items()},
           "online_s": _time_steps(online, max(1, min(steps, args.online_steps)), dev, warmup=1)}
    for mode in ("hard", "stored", "online"):
        res[f"{mode}_per_1000_steps_s"] = 1000 * res[f"{mode}_s"]
    res["stored_over_hard"] = res["stored_s"] / res["hard_s"]
    res["online_over_hard"] = res["online_s"] / res["hard_s"]
    idx_bytes = 2 if n <= 32768 else 4
    res["payload_bytes_per_frame_per_T"] = k * (idx_bytes + 2)
    res["projected_960h_4T_GB"] = FRAMES_960H * len(TEMPS) * k * (idx_bytes + 2) / 1e9
    res["dense_960h_4T_TB_fp16"] = FRAMES_960H * len(TEMPS) * n * 2 / 1e12
    return res


def cost(args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(0)
    out = {"threads": torch.get_num_threads(), "device": args.device, "sizes": {}}
    for name in args.sizes.split(","):
        out["sizes"][name] = r = _cost_size(name, args)
        print(f"{name:6s} {r['size']:18s} hard {r['hard_s'] * 1000:8.1f} ms  stored {r['stored_s'] * 1000:8.1f} ms "
              f"({r['stored_over_hard']:.2f}x)  online {r['online_s'] * 1000:8.1f} ms ({r['online_over_hard']:.2f}x)  "
              f"{r['payload_bytes_per_frame_per_T']} B/frame/T  960 h x 4 T: {r['projected_960h_4T_GB']:.0f} GB "
              f"(dense fp16: {r['dense_960h_4T_TB_fp16']:.0f} TB)", flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    f = sub.add_parser("fidelity")
    f.add_argument("--exp", required=True, help="a finished tiny run directory (teachers, shards)")
    f.add_argument("--ks", default="4,16,64")
    f.add_argument("--T", type=float, default=2.0, help="the students' temperature")
    f.add_argument("--epochs", type=int, default=3, help="student epochs (cap; 0: KL table only)")
    f.add_argument("--kl-utts", type=int, default=200)
    f.add_argument("--out", default="/tmp/bench-targets")
    c = sub.add_parser("cost")
    c.add_argument("--sizes", default="tiny,paper")
    c.add_argument("--batch", type=int, default=256)
    c.add_argument("--paper-batch", type=int, default=256)
    c.add_argument("--k", type=int, default=16)
    c.add_argument("--teachers", type=int, default=10)
    c.add_argument("--steps", type=int, default=30, help="timed steps at the tiny size")
    c.add_argument("--paper-steps", type=int, default=10, help="timed steps at the paper size")
    c.add_argument("--online-steps", type=int, default=5, help="timed online steps (cap)")
    c.add_argument("--device", default="cpu")
    c.add_argument("--precision", default="auto", help="auto (the recipe's: bf16 where fast) | 32-true | bf16-mixed")
    for q in (f, c):
        q.add_argument("--json", default="", help="also write the numbers here")
    args = p.parse_args()
    if args.what == "fidelity" and Path(args.out).exists():
        shutil.rmtree(args.out)
    res = fidelity(args) if args.what == "fidelity" else cost(args)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2, default=lambda v: None if isinstance(v, float) and math.isnan(v) else v))


if __name__ == "__main__":
    main()
