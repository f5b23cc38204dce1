"""Acoustic DNNs (plain ``nn.Module``): one feed-forward model, and K members stacked into one.

``AcousticDNN`` is the paper's hybrid acoustic model (Hinton et al. 2015, section 4): a window of
26 frames x 40 log-Mel coefficients (1040 inputs) -> ``hidden_layers`` ReLU layers of
``hidden_dim`` units -> logits over the HMM states (pdf ids).

``StackedDNN`` holds K such models with their weights stacked along a leading member axis and
evaluates all of them in one batched matmul per layer (``torch.baddbmm``), so that an ensemble of
teachers (or K teachers trained at once) keeps a CPU or a small GPU busy. Member k of a stacked
model built with seeds ``s`` is bit-identical to ``AcousticDNN(..., seed=s[k])``.

Both are initialised from an explicit seed with a private ``torch.Generator`` (He-normal hidden
layers, zero biases), so a model is reproducible from its seed and independent of global RNG state.
The model file (``save_model`` / ``load_model``) is a plain dict: constructor arguments, weights,
and whatever the caller adds (config, metrics).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from asr_kd.fileio import atomic_path
from asr_kd.errors import InputError

MODEL_FORMAT = "asr_kd.model.v1"


def _layer_dims(input_dim: int, hidden_layers: int, hidden_dim: int, num_pdfs: int) -> list[tuple[int, int]]:
    """(fan_in, fan_out) of every affine layer, input to output."""
    dims = [input_dim] + [hidden_dim] * hidden_layers + [num_pdfs]
    return list(zip(dims[:-1], dims[1:]))


def _init_layer(gen: torch.Generator, fan_in: int, fan_out: int, is_output: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight (fan_out, fan_in) and bias (fan_out,) drawn from ``gen``.

    Hidden layers: He-normal (std sqrt(2 / fan_in)), right for ReLU stacks 8 layers deep.
    Output layer: std 1/sqrt(fan_in), so the initial softmax is close to uniform but not flat.
    """
    std = (1.0 if is_output else math.sqrt(2.0)) / math.sqrt(fan_in)
    weight = torch.randn(fan_out, fan_in, generator=gen) * std
    bias = torch.zeros(fan_out)
    return weight, bias


def _seeded_layers(
    seed: int, input_dim: int, hidden_layers: int, hidden_dim: int, num_pdfs: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(int(seed))
    dims = _layer_dims(input_dim, hidden_layers, hidden_dim, num_pdfs)
    return [_init_layer(gen, i, o, is_output=(n == len(dims) - 1)) for n, (i, o) in enumerate(dims)]


class AcousticDNN(nn.Module):
    """Feed-forward acoustic model: (B, 26, 40) or (B, 1040) windows -> (B, num_pdfs) logits."""

    def __init__(
        self,
        input_dim: int = 26 * 40,
        hidden_layers: int = 4,
        hidden_dim: int = 512,
        num_pdfs: int = 100,
        dropout: float = 0.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if hidden_layers < 1 or hidden_dim < 1 or num_pdfs < 2:
            raise ValueError(f"AcousticDNN needs >= 1 hidden layer, >= 1 unit and >= 2 outputs; got "
                             f"{hidden_layers} x {hidden_dim} -> {num_pdfs}")
        self.input_dim = input_dim
        self.hidden_layers = hidden_layers
        self.hidden_dim = hidden_dim
        self.num_pdfs = num_pdfs
        self.dropout = dropout
        self.seed = seed
        dims = _layer_dims(input_dim, hidden_layers, hidden_dim, num_pdfs)
        self.hidden = nn.ModuleList(nn.Linear(i, o) for i, o in dims[:-1])
        self.output = nn.Linear(*dims[-1])
        self.reset_parameters(seed)

    def reset_parameters(self, seed: int) -> None:
        """Re-draw every weight from ``seed`` (same draws as member ``seed`` of a StackedDNN)."""
        layers = _seeded_layers(seed, self.input_dim, self.hidden_layers, self.hidden_dim, self.num_pdfs)
        with torch.no_grad():
            for lin, (w, b) in zip([*self.hidden, self.output], layers):
                lin.weight.copy_(w)
                lin.bias.copy_(b)
        self.seed = seed

    def kwargs(self) -> dict[str, Any]:
        """Constructor arguments (what ``load_model`` needs to rebuild the model)."""
        return {"input_dim": self.input_dim, "hidden_layers": self.hidden_layers,
                "hidden_dim": self.hidden_dim, "num_pdfs": self.num_pdfs,
                "dropout": self.dropout, "seed": self.seed}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.reshape(x.shape[0], -1)  # (B, 26*40)
        for lin in self.hidden:
            h = F.relu(lin(h))  # (B, H)
            if self.dropout > 0:
                h = F.dropout(h, self.dropout, self.training)
        return self.output(h)  # (B, N)


class StackedDNN(nn.Module):
    """K AcousticDNNs of one architecture, evaluated together: (B, D) -> (K, B, num_pdfs) logits.

    Weights are stored as ``weights[l]`` (K, fan_in, fan_out) and ``biases[l]`` (K, 1, fan_out).
    Every member sees the same input batch (the paper's ten models differ only by initialisation).
    """

    def __init__(
        self,
        seeds: Sequence[int],
        input_dim: int = 26 * 40,
        hidden_layers: int = 4,
        hidden_dim: int = 512,
        num_pdfs: int = 100,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if len(seeds) < 1:
            raise ValueError("StackedDNN needs at least one member seed")
        self.seeds = [int(s) for s in seeds]
        self.input_dim = input_dim
        self.hidden_layers = hidden_layers
        self.hidden_dim = hidden_dim
        self.num_pdfs = num_pdfs
        self.dropout = dropout
        per_member = [_seeded_layers(s, input_dim, hidden_layers, hidden_dim, num_pdfs) for s in self.seeds]
        n_layers = hidden_layers + 1
        self.weights = nn.ParameterList(
            nn.Parameter(torch.stack([m[l][0].t() for m in per_member]).contiguous())  # (K, in, out)
            for l in range(n_layers)
        )
        self.biases = nn.ParameterList(
            nn.Parameter(torch.stack([m[l][1] for m in per_member]).unsqueeze(1))  # (K, 1, out)
            for l in range(n_layers)
        )

    @property
    def num_members(self) -> int:
        return len(self.seeds)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], -1)  # (B, D)
        # first layer: one (B, D) @ (D, K*H) matmul for all members, then split by member
        w0, b0 = self.weights[0], self.biases[0]  # (K, D, H), (K, 1, H)
        device = x.device.type
        if torch.is_autocast_enabled(device):
            # Cast before the permuting copy, and the bias too, so that the layout copy and the first
            # layer's output (K*B*H values) stay in bf16 instead of going through fp32 (autocast casts
            # the matmul's operands only; "+ b0" with an fp32 bias would promote): ~6 % of the tiny
            # preset's stacked-teacher step on CPU (benchmarks/README.md, "Training").
            dtype = torch.get_autocast_dtype(device)
            w0, b0, x = w0.to(dtype), b0.to(dtype), x.to(dtype)
        k, d, h_dim = w0.shape
        h = (x @ w0.permute(1, 0, 2).reshape(d, k * h_dim)).reshape(-1, k, h_dim)  # (B, K, H)
        h = F.relu(h.transpose(0, 1) + b0)  # (K, B, H)
        if self.dropout > 0:
            h = F.dropout(h, self.dropout, self.training)
        for l in range(1, len(self.weights)):
            h = torch.baddbmm(self.biases[l], h, self.weights[l])  # (K, B, out)
            if l < len(self.weights) - 1:
                h = F.relu(h)
                if self.dropout > 0:
                    h = F.dropout(h, self.dropout, self.training)
        return h  # (K, B, N)

    def member(self, k: int) -> AcousticDNN:
        """A standalone copy of member ``k``."""
        model = AcousticDNN(self.input_dim, self.hidden_layers, self.hidden_dim, self.num_pdfs,
                            self.dropout, seed=self.seeds[k])
        with torch.no_grad():
            for lin, w, b in zip([*model.hidden, model.output], self.weights, self.biases):
                lin.weight.copy_(w[k].t())
                lin.bias.copy_(b[k, 0])
        return model

    @classmethod
    def from_members(cls, members: Sequence[AcousticDNN]) -> StackedDNN:
        """Stack separately trained models of one architecture (e.g. K teacher checkpoints)."""
        if not members:
            raise ValueError("from_members needs at least one model")
        arch = {(m.input_dim, m.hidden_layers, m.hidden_dim, m.num_pdfs) for m in members}
        if len(arch) != 1:
            raise ValueError(f"cannot stack models of different architectures: {sorted(arch)}")
        m0 = members[0]
        stacked = cls([m.seed for m in members], m0.input_dim, m0.hidden_layers, m0.hidden_dim,
                      m0.num_pdfs, m0.dropout)
        with torch.no_grad():
            for l in range(len(stacked.weights)):
                lins = [[*m.hidden, m.output][l] for m in members]
                stacked.weights[l].copy_(torch.stack([lin.weight.t() for lin in lins]))
                stacked.biases[l].copy_(torch.stack([lin.bias for lin in lins]).unsqueeze(1))
        return stacked


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters; for a StackedDNN, the total over all members."""
    return sum(p.numel() for p in model.parameters())


def dnn_parameter_count(input_dim: int, hidden_layers: int, hidden_dim: int, num_pdfs: int) -> int:
    """Parameters of one AcousticDNN, from its shape (paper: 1040, 8 x 2560, 14000 -> ~85 M)."""
    return sum(i * o + o for i, o in _layer_dims(input_dim, hidden_layers, hidden_dim, num_pdfs))


def dnn_train_flops_per_frame(input_dim: int, hidden_layers: int, hidden_dim: int, num_pdfs: int) -> int:
    """Matmul FLOPs of one training frame: forward 2*in*out per layer, backward twice that.

    The first layer's input gradient is not needed, so it costs 4*in*out instead of 6*in*out.
    """
    dims = _layer_dims(input_dim, hidden_layers, hidden_dim, num_pdfs)
    return sum((4 if n == 0 else 6) * i * o for n, (i, o) in enumerate(dims))


def save_model(path: str | Path, model: AcousticDNN, **extra: Any) -> None:
    """Write a standalone model file (atomically): constructor args + weights + ``extra``."""
    blob = {"format": MODEL_FORMAT, "kind": "AcousticDNN", "kwargs": model.kwargs(),
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}, **extra}
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[AcousticDNN, dict[str, Any]]:
    """Read a model file written by ``save_model``; returns (model in eval mode, the whole dict)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"model file {path} does not exist; run the stage that trains it")
    blob = torch.load(path, map_location=map_location, weights_only=True)
    if blob.get("format") != MODEL_FORMAT:
        raise ValueError(f"{path} is not an asr_kd model file (format {blob.get('format')!r})")
    model = AcousticDNN(**blob["kwargs"])
    model.load_state_dict(blob["state_dict"])
    model.eval()
    return model, blob
