"""Numeric precision: bf16 where the hardware runs it fast, fp32 elsewhere (``train.precision=auto``).

bf16 autocast doubles a training step on a GPU or on a CPU with AMX-BF16 / AVX512-BF16, but on a
CPU without bf16 instructions it is emulated and far slower than fp32 (measured on a 2-core AMD
EPYC with AVX2 only: 60 GFLOP/s fp32 vs 0.3 GFLOP/s bf16 matmul, see benchmarks/README.md). So
"auto" asks the hardware:

* CUDA: ``bf16-mixed`` when the GPU supports bf16, else ``32-true``;
* CPU: ``bf16-mixed`` with AMX tiles or AVX512-BF16, else ``32-true``.

``train.precision`` may also name a Lightning precision directly (``32-true``, ``bf16-mixed``,
``16-mixed``). Inference (frame accuracy, soft-target caches, decoding) follows the same choice
through :func:`inference_autocast`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

AUTO = "auto"


def cpu_has_fast_bf16() -> bool:
    """AMX-BF16 tiles or AVX512-BF16 (torch's own CPU feature checks)."""
    cpu = torch.cpu
    for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        fn = getattr(cpu, probe, None)
        try:
            if fn is not None and fn():
                return True
        except Exception:  # noqa: BLE001 - a probe that fails means "not supported"
            continue
    return False


def device_has_fast_bf16(device_type: str) -> bool:
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device_type == "cpu":
        return cpu_has_fast_bf16()
    return False


def _device_type(accelerator: str) -> str:
    if accelerator in ("gpu", "cuda"):
        return "cuda"
    if accelerator == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return accelerator


def resolve_precision(precision: str, accelerator: str = "auto") -> str:
    """``train.precision`` as Lightning takes it: "auto" becomes bf16-mixed or 32-true."""
    if precision != AUTO:
        return precision
    return "bf16-mixed" if device_has_fast_bf16(_device_type(accelerator)) else "32-true"


def inference_precision(precision: str, device_type: str) -> str:
    """The precision a forward pass runs in on ``device_type`` (cpu, cuda): ``precision`` resolved
    as :func:`resolve_precision`, except that bf16 asked for on a device without fast bf16 (a
    preset's ``bf16-mixed``, chosen for its GPUs, on a CPU without AVX512-BF16/AMX) runs in fp32:
    emulated bf16 is ~50x slower there and no more exact."""
    resolved = resolve_precision(precision, device_type)
    if resolved.startswith("bf16") and not device_has_fast_bf16(device_type):
        return "32-true"
    return resolved


@contextlib.contextmanager
def inference_autocast(device: torch.device | str, precision: str = AUTO) -> Iterator[None]:
    """bf16 autocast for a forward pass when ``precision`` (resolved for ``device``) is bf16."""
    device_type = torch.device(device).type
    if resolve_precision(precision, device_type).startswith("bf16"):
        with torch.autocast(device_type, dtype=torch.bfloat16):
            yield
    else:
        yield
