"""Where a training step's time goes: the PyTorch profiler over the steps of the recipe's models.

    python benchmarks/profile_step.py                          # bf16 where the CPU runs it fast, else fp32
    python benchmarks/profile_step.py --dtype float32 --cases tiny-teachers,student-dense

For each case, one optimiser step as the recipe runs it (forward under autocast, the loss in fp32,
backward, fused Adam over fp32 master weights) is profiled over ``--steps`` steps after warm-up, and its
CPU time is split two ways:

* by phase (``record_function`` ranges): forward, loss, backward, optimiser;
* by kind of operator (self time of the profiler's leaf operators): matmuls (``mm``, ``addmm``,
  ``bmm``, ``baddbmm``), dtype casts and copies (autocast's weight casts, ``_to_copy``, ``copy_``),
  elementwise (ReLU and its backward, softmax, log-softmax, the loss's arithmetic), Adam's update
  (every other operator inside the optimiser range: its moments, square roots and divisions over
  each fp32 parameter), and the rest (framework overhead, allocation, views).

Cases: ``tiny-teachers`` (the tiny preset's 10 stacked 3 x 320 teachers, 460 states), ``student-dense``
(one 3 x 320 student on dense soft targets: cached or online give the same step), ``student-stored``
(the same on stored top-64 targets), ``paper`` (one 8 x 2560 teacher, 14,000 states). The recipe's
Lightning loop adds its own per-step work on top of these (logging, callbacks); this profiles the
arithmetic side only. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile, record_function

from asr_kd.nn.models import AcousticDNN, StackedDNN
from asr_kd.nn.precision import device_has_fast_bf16

CASES = {
    # name: (members, hidden_layers, hidden_dim, num_pdfs, targets)
    "tiny-teachers": (10, 3, 320, 460, "hard"),
    "student-dense": (1, 3, 320, 460, "dense"),
    "student-stored": (1, 3, 320, 460, "stored"),
    "paper": (1, 8, 2560, 14000, "hard"),
}
PHASES = ("forward", "loss", "backward", "optimiser")
MATMUL = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"}
CAST = {"aten::_to_copy", "aten::copy_", "aten::to", "aten::_copy_from", "aten::_copy_from_and_resize"}
ELEMENTWISE = {"aten::relu", "aten::threshold_backward", "aten::_softmax", "aten::_log_softmax",
               "aten::_log_softmax_backward_data", "aten::_softmax_backward_data", "aten::nll_loss_forward",
               "aten::nll_loss_backward", "aten::mul", "aten::sub", "aten::neg", "aten::sum", "aten::exp",
               "aten::log", "aten::div", "aten::add", "aten::clamp_min", "aten::gather", "aten::scatter_add_",
               "aten::mean", "aten::fill_", "aten::zero_"}


def make_step(case: str, batch: int, dtype: torch.dtype, adam: str = "default", T: float = 2.0, w: float = 0.5,
              k: int = 64):
    members, layers, dim, pdfs, targets = CASES[case]
    g = torch.Generator().manual_seed(0)
    if members > 1:
        model: torch.nn.Module = StackedDNN.from_members([AcousticDNN(1040, layers, dim, pdfs, seed=s)
                                                          for s in range(members)])
    else:
        model = AcousticDNN(1040, layers, dim, pdfs, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, **({} if adam == "default" else {adam: True}))
    x = torch.randn(batch, 26, 40, generator=g)
    y = torch.randint(0, pdfs, (batch,), generator=g)
    soft = torch.softmax(torch.randn(batch, pdfs, generator=g), dim=-1)
    top_p, top_i = soft.topk(k, dim=-1)
    use_autocast = dtype != torch.float32

    def loss_of(z: torch.Tensor) -> torch.Tensor:
        if z.dim() == 3:  # (K, B, N): stacked teachers, summed over members
            return F.cross_entropy(z.reshape(-1, pdfs), y.repeat(z.shape[0])) * z.shape[0]
        hard = F.cross_entropy(z, y)
        logq = F.log_softmax(z / T, dim=-1)
        if targets == "dense":
            soft_ce = -(soft * logq).sum(-1).mean()
        elif targets == "stored":  # top-k probabilities and the tail's mass on the rest
            picked = logq.gather(1, top_i)
            tail = (1 - top_p.sum(-1)).clamp_min(0)
            rest = torch.log1p(-picked.exp().sum(-1).clamp(max=1 - 1e-6))
            soft_ce = -((top_p * picked).sum(-1) + tail * rest).mean()
        else:
            return hard
        return w * hard + (1 - w) * T * T * soft_ce

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with record_function("forward"), torch.autocast("cpu", dtype=dtype, enabled=use_autocast):
            z = model(x)
        with record_function("loss"):
            loss = loss_of(z.float())
        with record_function("backward"):
            loss.backward()
        with record_function("optimiser"):
            opt.step()

    return step


def kind_of(name: str, in_optimiser: bool) -> str:
    if name in MATMUL:
        return "matmul"
    if name in CAST:
        return "casts/copies"
    if in_optimiser:
        return "Adam update"
    if name in ELEMENTWISE or name.endswith("_backward"):
        return "elementwise"
    return "other"


def profile_case(case: str, batch: int, dtype: torch.dtype, steps: int, adam: str = "default") -> dict:
    step = make_step(case, batch, dtype, adam)
    for _ in range(3):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    events = prof.events()
    phases = {p: 0.0 for p in PHASES}
    windows = []
    for e in events:
        if e.name in phases:
            phases[e.name] += e.cpu_time_total
            windows.append((e.name, e.time_range.start, e.time_range.end))
    kinds: dict[str, float] = defaultdict(float)
    for e in events:
        if e.name in phases or e.name.startswith("ProfilerStep"):
            continue
        start = e.time_range.start
        in_opt = any(n == "optimiser" and a <= start <= b for n, a, b in windows)
        kinds[kind_of(e.name, in_opt)] += e.self_cpu_time_total
    total = sum(phases.values())
    return {"case": case, "step_ms": total / steps / 1e3, "phases": {p: v / total for p, v in phases.items()},
            "kinds": {k: v / max(sum(kinds.values()), 1e-9) for k, v in kinds.items()}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default=",".join(CASES), help="comma list of: " + ", ".join(CASES))
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--adam", default="fused", choices=["default", "foreach", "fused"],
                   help="Adam's implementation (fused: the recipe's; default: torch's choice for the device)")
    args = p.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    name = args.dtype if args.dtype != "auto" else ("bfloat16" if device_has_fast_bf16("cpu") else "float32")
    dtype = getattr(torch, name)
    print(f"CPU, {name}, Adam {args.adam}, torch threads {torch.get_num_threads()}, batch {args.batch}, "
          f"{args.steps} profiled steps\n")
    rows = [profile_case(c, args.batch, dtype, args.steps if c != "paper" else max(2, args.steps // 5), args.adam)
            for c in args.cases.split(",")]
    kinds = ["matmul", "casts/copies", "elementwise", "Adam update", "other"]
    print("| case | step ms | " + " | ".join(PHASES) + " | " + " | ".join(kinds) + " |")
    print("|---|---:|" + "---:|" * (len(PHASES) + len(kinds)))
    for r in rows:
        cells = [f"{100 * r['phases'][ph]:.0f} %" for ph in PHASES] + [f"{100 * r['kinds'].get(k, 0):.0f} %" for k in kinds]
        print(f"| {r['case']} | {r['step_ms']:.1f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
