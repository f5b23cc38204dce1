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

With ``--cases`` it instead compares ways of running one training step of the recipe's models, in
one run, interleaved (every round times every variant once; the best round counts), against the
floor (the step's matmuls alone, at the case's shapes: one (B, D) x (D, K*H) matmul and batched
matmuls for K stacked members, in ``--dtype``)::

    python benchmarks/bench_train.py --dtype bfloat16 --threads 2 \
        --cases tiny-teachers,student-cached,student-stored,paper --variants recipe@HEAD~1,recipe,step,bf16w,compile

Cases: ``tiny-teachers`` (the tiny preset's 10 stacked 3 x 320 teachers, 460 states, batch 512),
``tiny-students`` (the tiny preset's students: 4 stacked 3 x 320 at T = 1, 2, 5, 10 on dense cached
p_ens(T), batch 512), ``student-cached`` (one 3 x 320 student at T = 2 on dense cached p_ens(T), batch
512), ``student-stored`` (the same on stored top-64 + tail targets), ``100h-student-stored`` (the
librispeech-100h preset's 6 x 1024 student, 4,200 states, on stored top-64 targets, batch 1,024),
``paper`` (one 8 x 2560 teacher, 14,000 states, batch 256); ``CASE:BATCH`` sets another batch. Variants:

* ``recipe``: the recipe's own step, a Lightning ``Trainer`` running ``TeacherSystem`` /
  ``DistillSystem`` (``asr_kd.nn.systems``) at ``bf16-mixed`` (or ``32-true`` for ``--dtype
  float32``) on in-memory batches: forward, loss, the running accuracy, logging, fused Adam, the LR
  scheduler; time per step = median gap between ``on_train_batch_end`` calls;
* ``recipe@REF``: the same with ``asr_kd/nn/systems.py`` and ``models.py`` as of git revision REF
  (before/after in one run); any variant takes ``@REF`` for the model of that revision;
* ``step``: the bare step (autocast forward, the recipe's loss in fp32, backward, fused Adam);
* ``adam-default``: the same with torch's default (single-tensor) Adam: what the issue measured;
* ``bf16w``: bf16 copies of the weights, cast once per step after the update, used without
  autocast (``torch.func.functional_call``); fused Adam over the fp32 master weights;
* ``compile`` / ``bf16w-compile``: ``torch.compile`` (inductor) of forward + loss;
  ``compile-loss``: of the loss alone (the model eager). Compile time is in the setup column.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

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


# -- step variants on the recipe's cases (--cases) ------------------------------------------------

CASES = {
    # name: (members, hidden_layers, hidden_dim, num_pdfs, targets, batch)
    "tiny-teachers": (10, 3, 320, 460, "hard", 512),  # the tiny preset's stacked teachers
    "student-cached": (1, 3, 320, 460, "cached", 512),  # a tiny student on dense cached p_ens(T)
    "student-stored": (1, 3, 320, 460, "stored", 512),  # ... on stored top-64 + tail targets
    "tiny-students": (4, 3, 320, 460, "cached", 512),  # the tiny preset's students: T = 1, 2, 5, 10 stacked
    "100h-student-stored": (1, 6, 1024, 4200, "stored", 1024),  # librispeech-100h's student, stored top-64
    "paper": (1, 8, 2560, 14000, "hard", 256),  # Hinton et al. 2015, section 4
}
VARIANTS = ("recipe", "step", "adam-default", "bf16w", "compile", "bf16w-compile", "compile-loss")
TEMPERATURE, HARD_WEIGHT, TOP_K = 2.0, 0.5, 64
STACKED_TEMPERATURES = (1.0, 2.0, 5.0, 10.0)  # a stack of K students trains at the first K of these


def parse_case(spec: str) -> tuple[str, tuple]:
    name, _, batch = spec.partition(":")
    members, layers, dim, pdfs, targets, default_batch = CASES[name]
    return spec, (members, layers, dim, pdfs, targets, int(batch) if batch else default_batch)


class CaseData:
    """One case's model (fresh per variant, same seeds), batch and soft targets, on ``device``."""

    def __init__(self, shape: tuple, device: torch.device) -> None:
        self.members, self.layers, self.dim, self.pdfs, self.targets, self.batch = shape
        g = torch.Generator().manual_seed(0)
        b, n = self.batch, self.pdfs
        self.x = torch.randn(b, 26, 40, generator=g).to(device)
        self.y = torch.randint(0, n, (b,), generator=g).to(device)
        self.cache = torch.softmax(torch.randn(4 * b, n, generator=g) * 3, -1).half()  # CPU, as CachedTargets
        self.ids = torch.randint(0, 4 * b, (b,), generator=g)
        top_p, top_i = self.cache[self.ids].float().topk(TOP_K, dim=-1)
        self.top_p, self.top_i = top_p.half().to(device), top_i.to(device)
        self.device = device

    def model(self, models=None) -> torch.nn.Module:
        """A fresh model, from ``models`` (``asr_kd.nn.models`` at some revision; default: this tree's)."""
        m = models or importlib.import_module("asr_kd.nn.models")
        if self.members > 1:
            return m.StackedDNN(list(range(self.members)), 1040, self.layers, self.dim, self.pdfs).to(self.device)
        return m.AcousticDNN(1040, self.layers, self.dim, self.pdfs, seed=0).to(self.device)

    def batch_dict(self) -> dict:
        batch = {"x": self.x, "y": self.y}
        if self.targets == "cached":
            batch["ids"] = self.ids
        elif self.targets == "stored":
            batch.update(topk_ids=self.top_i, topk_p=self.top_p)
        return batch

    def temperatures(self) -> list[float]:
        return list(STACKED_TEMPERATURES[: self.members]) if self.members > 1 else [TEMPERATURE]

    def source(self):
        """The recipe's soft-target source: one, or one per stacked student (each at its own T)."""
        from asr_kd.nn.target_sources import CachedTargets, StoredTargets
        sources = [CachedTargets(self.cache, T) if self.targets == "cached" else StoredTargets(0, T)
                   for T in self.temperatures()]
        return sources if self.members > 1 else sources[0]

    def soft(self):
        """This step's soft targets, looked up as the recipe's source does (None for hard labels;
        a list, one per member, for stacked students)."""
        if self.targets == "hard":
            return None
        source = self.source()
        if isinstance(source, list):
            return [s.targets(self.batch_dict()) for s in source]
        return source.targets(self.batch_dict())

    def loss(self, z: torch.Tensor, soft=None) -> torch.Tensor:
        """The recipe's loss of the logits (TeacherSystem's cross-entropy, or distillation_loss)."""
        from asr_kd.nn.losses import distillation_loss
        z = z.float()
        if z.dim() == 3 and soft is not None:  # stacked students: the sum of the members' losses
            return sum(distillation_loss(zk, self.y, sk, T, HARD_WEIGHT)
                       for zk, sk, T in zip(z, soft, self.temperatures()))
        if z.dim() == 3:
            k, b, n = z.shape
            return F.cross_entropy(z.reshape(k * b, n), self.y.repeat(k)) * k
        if self.targets == "hard":
            return F.cross_entropy(z, self.y)
        return distillation_loss(z, self.y, soft, TEMPERATURE, HARD_WEIGHT)


def case_floor(data: CaseData, dtype: torch.dtype, steps: int) -> Callable[[], None]:
    """The step's matmuls alone at the case's shapes (stacked: one mm for layer 0, bmm for the rest)."""
    k, b, dev = data.members, data.batch, data.device
    ops: list[Callable[[], object]] = []
    for n, (i, o) in enumerate(_layer_dims(1040, data.layers, data.dim, data.pdfs)):
        def r(*shape: int) -> torch.Tensor:
            return torch.randn(*shape, device=dev, dtype=dtype)
        if k > 1 and n == 0:  # (B, D) @ (D, K*H); weight grad only
            a, w, g = r(b, i), r(i, k * o), r(b, k * o)
            ops.append(lambda a=a, w=w, g=g: (torch.mm(a, w), torch.mm(a.t(), g)))
        elif k > 1:
            a, w, g = r(k, b, i), r(k, i, o), r(k, b, o)
            ops.append(lambda a=a, w=w, g=g: (torch.bmm(a, w), torch.bmm(g, w.transpose(1, 2)),
                                              torch.bmm(a.transpose(1, 2), g)))
        else:
            a, w, g = r(b, i), r(i, o), r(b, o)
            ops.append(lambda a=a, w=w, g=g, n=n: (torch.mm(a, w), torch.mm(g, w.t()) if n else None,
                                                   torch.mm(a.t(), g)))
    return lambda: [op() for op in ops]


def bare_step(data: CaseData, variant: str, dtype: torch.dtype) -> Callable[[], None]:
    """One optimiser step of ``variant`` (step, adam-default, bf16w, compile, bf16w-compile, compile-loss;
    ``@REF``: the model of ``asr_kd/nn/models.py`` at git revision REF)."""
    variant, _, ref = variant.partition("@")
    model = data.model(module_at(ref, "asr_kd.nn.models"))
    device = data.device
    low = dtype != torch.float32
    params = list(model.parameters())
    adam = {} if variant == "adam-default" else {"fused": True}
    opt = torch.optim.Adam(params, lr=1e-4, **adam)
    if variant.startswith("bf16w"):
        names = [n for n, _ in model.named_parameters()]
        shadow = [p.detach().to(dtype).requires_grad_() for p in params]  # the weights the step computes with

        def fwd_loss(x: torch.Tensor) -> torch.Tensor:
            return data.loss(torch.func.functional_call(model, dict(zip(names, shadow)), (x.to(dtype),)), data.soft())
    else:
        shadow = []

        def fwd_loss(x: torch.Tensor) -> torch.Tensor:
            with torch.autocast(device.type, dtype=dtype, enabled=low):
                z = model(x)
            return data.loss(z, data.soft())
    if variant.endswith("compile"):
        fwd_loss = torch.compile(fwd_loss)
    elif variant == "compile-loss":  # the model eager (its matmuls), the loss's elementwise work fused
        loss_of = torch.compile(data.loss)

        def fwd_loss(x: torch.Tensor) -> torch.Tensor:
            with torch.autocast(device.type, dtype=dtype, enabled=low):
                z = model(x)
            return loss_of(z, data.soft())

    def step() -> None:
        if shadow:
            for s in shadow:
                s.grad = None
        else:
            opt.zero_grad(set_to_none=True)
        fwd_loss(data.x).backward()
        if shadow:
            for p, s in zip(params, shadow):
                p.grad = s.grad.float()
        opt.step()
        if shadow:
            with torch.no_grad():
                torch._foreach_copy_(shadow, params)

    return step


def module_at(ref: str, module: str):
    """``module`` (e.g. ``asr_kd.nn.systems``), or its file as of git revision ``ref``, loaded as a
    module of its own (its imports of other asr_kd modules resolve to the working tree's)."""
    if not ref:
        return importlib.import_module(module)
    root = Path(__file__).resolve().parents[1]
    path = module.replace(".", "/") + ".py"
    src = subprocess.run(["git", "-C", str(root), "show", f"{ref}:{path}"], check=True, capture_output=True,
                         text=True).stdout
    name = f"{module}_at_{abs(hash(ref))}"
    mod = importlib.util.module_from_spec(importlib.util.spec_from_loader(name, loader=None))
    sys.modules[name] = mod
    exec(compile(src, f"{ref}:{path}", "exec"), mod.__dict__)
    return mod


class RecipeStep:
    """The recipe's Lightning step: each call fits ``steps`` + 3 batches and returns the median step time."""

    def __init__(self, data: CaseData, ref: str, dtype: torch.dtype) -> None:
        from asr_kd.config import TrainConfig
        mod, models = module_at(ref, "asr_kd.nn.systems"), module_at(ref, "asr_kd.nn.models")
        self.data, self.precision = data, ("32-true" if dtype == torch.float32 else "bf16-mixed")
        cfg = TrainConfig(batch_size=data.batch, precision=self.precision)
        if data.targets == "hard":
            self.system = mod.TeacherSystem(data.model(models), cfg, steps_per_epoch=1000)
        else:
            self.system = mod.DistillSystem(data.model(models), data.source(), cfg, hard_weight=HARD_WEIGHT,
                                            steps_per_epoch=1000)

    def __call__(self, steps: int) -> float:
        import lightning as L

        class Clock(L.Callback):
            def __init__(self) -> None:
                self.t: list[float] = []

            def on_train_batch_end(self, *args: object) -> None:
                self.t.append(time.perf_counter())

        clock = Clock()
        trainer = L.Trainer(accelerator=self.data.device.type, devices=1, precision=self.precision, max_epochs=1,
                            logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, callbacks=[clock], num_sanity_val_steps=0,
                            limit_val_batches=0)
        batches = [self.data.batch_dict() for _ in range(steps + 3)]
        trainer.fit(self.system, train_dataloaders=torch.utils.data.DataLoader(batches, batch_size=None))
        gaps = sorted(b - a for a, b in zip(clock.t[2:], clock.t[3:]))
        return gaps[len(gaps) // 2]


def compare_variants(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> None:
    import logging
    import warnings
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "lightning.pytorch.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    variants = args.variants.split(",")
    print(f"device {device} ({cpu_name() if device.type == 'cpu' else torch.cuda.get_device_name()}), dtype "
          f"{args.dtype}, torch threads {torch.get_num_threads()}, {args.rounds} interleaved rounds; "
          f"load average before: {load_average()}")
    rows = []
    for spec in args.cases.split(","):
        name, shape = parse_case(spec)
        data = CaseData(shape, device)
        steps = args.steps if "paper" not in name else max(3, args.steps // 3)
        floor = case_floor(data, dtype, steps)
        timers: dict[str, Callable[[], float]] = {"floor": lambda f=floor: timeit(f, device, steps)}
        setup: dict[str, float] = {}
        for v in variants:
            t0 = time.perf_counter()
            if v == "recipe" or v.startswith("recipe@"):
                recipe = RecipeStep(data, v.partition("@")[2], dtype)
                recipe(3)  # warm-up
                timers[v] = lambda r=recipe: r(steps)
            else:
                fn = bare_step(data, v, dtype)
                fn()  # warm-up (compiles)
                timers[v] = lambda fn=fn: timeit(fn, device, steps)
            setup[v] = time.perf_counter() - t0
        best = {v: float("inf") for v in timers}
        for _ in range(args.rounds):
            for v, timer in timers.items():
                best[v] = min(best[v], timer())
        flops = dnn_train_flops_per_frame(1040, data.layers, data.dim, data.pdfs) * data.batch * data.members
        for v in timers:
            rows.append({"case": name, "variant": v, "batch": data.batch, "members": data.members,
                         "step_ms": 1e3 * best[v], "frames_per_s": data.batch / best[v],
                         "floor_over_step": best["floor"] / best[v], "gflops": flops / best[v] / 1e9,
                         "setup_s": setup.get(v, 0.0)})
        print(f"  {name}: done, load average {load_average()}", flush=True)
    print(f"\n| case | batch | variant | step ms | frames/s | floor / step | GFLOP/s | setup s |\n"
          f"|---|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['case']} | {r['batch']} | {r['variant']} | {r['step_ms']:.1f} | {r['frames_per_s']:,.0f} | "
              f"{r['floor_over_step']:.2f} | {r['gflops']:.0f} | {r['setup_s']:.1f} |")
    print(f"\nload average after: {load_average()}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


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
    p.add_argument("--cases", default="", help="compare step variants on these cases (comma list of: "
                   + ", ".join(CASES) + "; CASE:BATCH for another batch) instead of the sizes above")
    p.add_argument("--variants", default="recipe,step", help="comma list of: " + ", ".join(VARIANTS)
                   + ", recipe@REF")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds per case (the best counts)")
    args = p.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.cases:
        compare_variants(args, device, dtype)
        return
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
