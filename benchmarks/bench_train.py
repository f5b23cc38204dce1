"""Teacher-training throughput against the matmul-bound floor, and stacked-K vs looped-K teachers.

    python benchmarks/bench_train.py                      # paper size + CPU size, on CPU
    python benchmarks/bench_train.py --sizes cpu --k 10 --device cuda --dtype bfloat16

For each model size it measures, in the same run:

* training throughput (frames/s) of one optimiser step (forward, cross-entropy, backward, Adam) of
  an ``AcousticDNN``;
* the floor: the same step's matmuls alone (``torch.mm`` of every layer's forward, input-gradient
  and weight-gradient shapes), timed back to back; ``efficiency = floor time / step time``;
* K teachers: inference and one training step, as one ``StackedDNN`` (batched matmul) and as a
  Python loop over K separate ``AcousticDNN``;
* this machine's peak matmul rate in fp32 and in bf16 (square ``torch.mm``), so the step's rate
  is also shown against the fastest arithmetic the machine has (bf16 where the CPU has AMX /
  AVX512-BF16 or on a GPU; on a CPU without them bf16 is emulated and far slower than fp32).

Prints a table; ``--json`` also writes the numbers to a file.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from asr_kd.nn.models import AcousticDNN, StackedDNN, _layer_dims, dnn_parameter_count, dnn_train_flops_per_frame
from asr_kd.nn.precision import device_has_fast_bf16

SIZES = {
    # name: (hidden_layers, hidden_dim, num_pdfs)
    "paper": (8, 2560, 14000),  # Hinton et al. 2015, section 4
    "cpu": (4, 512, 500),  # the tiny preset's model with a few hundred tied states
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timeit(fn: Callable[[], object], device: torch.device, steps: int, warmup: int = 1) -> float:
    """Seconds per call (median of ``steps`` calls after ``warmup``)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def matmul_floor(dims: list[tuple[int, int]], batch: int, device: torch.device, dtype: torch.dtype,
                 steps: int) -> float:
    """Seconds of one training step's matmuls alone (forward, input grad except layer 0, weight grad)."""
    mats = []
    for n, (i, o) in enumerate(dims):
        x, w, g = (torch.randn(batch, i, device=device, dtype=dtype), torch.randn(i, o, device=device, dtype=dtype),
                   torch.randn(batch, o, device=device, dtype=dtype))
        mats.append((x, w, g, n > 0))

    def step() -> None:
        for x, w, g, need_dx in mats:
            torch.mm(x, w)  # forward (B, out)
            if need_dx:
                torch.mm(g, w.t())  # input gradient (B, in)
            torch.mm(x.t(), g)  # weight gradient (in, out)

    return timeit(step, device, steps)


def peak_matmul_gflops(device: torch.device, dtype: torch.dtype, n: int, steps: int = 3) -> float:
    """GFLOP/s of an (n x n) @ (n x n) matmul in ``dtype``."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n**3 / timeit(lambda: torch.mm(a, b), device, steps) / 1e9


def peak_rates(device: torch.device) -> dict:
    """Peak matmul GFLOP/s in fp32 and bf16 (a small matrix for bf16 where it is emulated: slow)."""
    fast = device_has_fast_bf16(device.type)
    return {"fp32_gflops": peak_matmul_gflops(device, torch.float32, 2048),
            "bf16_gflops": peak_matmul_gflops(device, torch.bfloat16, 2048 if fast else 256),
            "fast_bf16": fast}


def train_step_time(model: torch.nn.Module, batch: int, num_pdfs: int, device: torch.device, dtype: torch.dtype,
                    steps: int) -> float:
    """Seconds per optimiser step: forward, CE (summed over members if stacked), backward, Adam."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 26, 40, device=device)
    y = torch.randint(0, num_pdfs, (batch,), device=device)
    use_autocast = dtype != torch.float32

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype, enabled=use_autocast):
            out = model(x)
        if out.dim() == 3:  # (K, B, N)
            k = out.shape[0]
            loss = F.cross_entropy(out.reshape(-1, num_pdfs).float(), y.repeat(k)) * k
        else:
            loss = F.cross_entropy(out.float(), y)
        loss.backward()
        opt.step()

    return timeit(step, device, steps)


def bench_size(name: str, args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> dict:
    layers, dim, pdfs = SIZES[name]
    batch = args.batch
    dims = _layer_dims(1040, layers, dim, pdfs)
    model = AcousticDNN(1040, layers, dim, pdfs, seed=0).to(device)
    steps = args.steps if name != "paper" else max(2, args.steps // 5)
    t_step = train_step_time(model, batch, pdfs, device, dtype, steps)
    t_floor = matmul_floor(dims, batch, device, dtype, steps)
    flops = dnn_train_flops_per_frame(1040, layers, dim, pdfs) * batch
    row = {"size": name, "shape": f"1040-{layers}x{dim}-{pdfs}", "params": dnn_parameter_count(1040, layers, dim, pdfs),
           "batch": batch, "train_frames_per_s": batch / t_step, "floor_frames_per_s": batch / t_floor,
           "efficiency": t_floor / t_step, "train_gflops": flops / t_step / 1e9, "floor_gflops": flops / t_floor / 1e9}
    del model
    k = args.k if name != "paper" else args.k_paper
    if k > 1:
        row.update(bench_stacked(k, layers, dim, pdfs, args, device, dtype, max(2, steps // 2)))
    return row


def bench_stacked(k: int, layers: int, dim: int, pdfs: int, args: argparse.Namespace, device: torch.device,
                  dtype: torch.dtype, steps: int) -> dict:
    seeds = list(range(k))
    members = [AcousticDNN(1040, layers, dim, pdfs, seed=s).to(device) for s in seeds]
    stacked = StackedDNN.from_members(members).to(device)
    x = torch.randn(args.batch, 26, 40, device=device)
    use_autocast = dtype != torch.float32

    def infer_stacked() -> None:
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=use_autocast):
            stacked(x)

    def infer_loop() -> None:
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=use_autocast):
            for m in members:
                m(x)

    t_inf_stacked = timeit(infer_stacked, device, steps)
    t_inf_loop = timeit(infer_loop, device, steps)
    t_train_stacked = train_step_time(stacked, args.batch, pdfs, device, dtype, steps)
    t_train_loop = sum(train_step_time(m, args.batch, pdfs, device, dtype, max(1, steps // 2)) for m in members[:2])
    t_train_loop *= k / 2  # members are identical in cost: time two, scale to K
    return {"K": k, "infer_stacked_s": t_inf_stacked, "infer_loop_s": t_inf_loop,
            "infer_speedup": t_inf_loop / t_inf_stacked, "train_stacked_s": t_train_stacked,
            "train_loop_s": t_train_loop, "train_speedup": t_train_loop / t_train_stacked}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="paper,cpu", help="comma list of: " + ", ".join(SIZES))
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--k", type=int, default=10, help="teachers for the stacked-vs-loop comparison (CPU size)")
    p.add_argument("--k-paper", type=int, default=2, help="teachers for stacked-vs-loop at paper size")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--json", default="", help="also write the rows to this JSON file")
    args = p.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    print(f"device {device}, dtype {args.dtype}, torch threads {torch.get_num_threads()}, batch {args.batch}")
    peak = peak_rates(device)
    best = max(peak["fp32_gflops"], peak["bf16_gflops"])
    print(f"peak matmul: fp32 {peak['fp32_gflops']:.1f} GFLOP/s, bf16 {peak['bf16_gflops']:.1f} GFLOP/s "
          f"({'fast' if peak['fast_bf16'] else 'emulated: no AMX / AVX512-BF16'}); best {best:.1f}\n")
    rows = [bench_size(name, args, device, dtype) for name in args.sizes.split(",")]
    for r in rows:
        r.update(peak, of_best_peak=r["train_gflops"] / best, of_fp32_peak=r["train_gflops"] / peak["fp32_gflops"])
    print(f"{'size':<6} {'shape':<22} {'params':>10} {'train fr/s':>11} {'floor fr/s':>11} {'ratio':>6} "
          f"{'GFLOP/s':>8} {'of fp32 peak':>13} {'of best peak':>13}")
    for r in rows:
        print(f"{r['size']:<6} {r['shape']:<22} {r['params']:>10,} {r['train_frames_per_s']:>11,.0f} "
              f"{r['floor_frames_per_s']:>11,.0f} {r['efficiency']:>6.2f} {r['train_gflops']:>8.1f} "
              f"{r['of_fp32_peak']:>13.2f} {r['of_best_peak']:>13.2f}")
    print(f"\n{'size':<6} {'K':>3} {'infer stacked s':>16} {'infer loop s':>13} {'x':>5} {'train stacked s':>16} "
          f"{'train loop s':>13} {'x':>5}")
    for r in rows:
        if "K" in r:
            print(f"{r['size']:<6} {r['K']:>3} {r['infer_stacked_s']:>16.4f} {r['infer_loop_s']:>13.4f} "
                  f"{r['infer_speedup']:>5.2f} {r['train_stacked_s']:>16.4f} {r['train_loop_s']:>13.4f} "
                  f"{r['train_speedup']:>5.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
