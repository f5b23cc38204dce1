"""The teacher ensemble: K acoustic DNNs evaluated in one batched forward, and its soft targets.

The paper (Hinton et al. 2015, sections 2 and 4) averages the members' *probabilities* at
temperature T: ``p_ens(T) = mean_k softmax(z_k / T)`` (arithmetic, the default). The geometric
option is the renormalised ``exp(mean_k log softmax(z_k / T))``.

Also here: frame accuracy over a window loader (single model, each member, the ensemble), and
per-utterance log-posteriors (T_frames, N) for the decoder, for a single model or the ensemble.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from asr_kd.nn.models import StackedDNN, load_model
from asr_kd.nn.precision import inference_autocast
from asr_kd.progress import progress

log = logging.getLogger(__name__)

MEANS = ("arithmetic", "geometric")


def _check_mean(mean: str) -> None:
    if mean not in MEANS:
        raise ValueError(f"ensemble mean must be one of {', '.join(MEANS)}; got {mean!r}")


def ensemble_log_probs(logits_k: torch.Tensor, T: float = 1.0, mean: str = "arithmetic") -> torch.Tensor:
    """log p_ens(T) from member logits (K, B, N) -> (B, N), computed stably in log space.

    arithmetic: log mean_k softmax(z_k / T) = logsumexp_k log_softmax(z_k / T) - log K
    geometric:  log_softmax(mean_k log_softmax(z_k / T))
    """
    _check_mean(mean)
    logp = F.log_softmax(logits_k.float() / T, dim=-1)  # (K, B, N)
    if mean == "arithmetic":
        return torch.logsumexp(logp, dim=0) - math.log(logp.shape[0])  # (B, N)
    return F.log_softmax(logp.mean(dim=0), dim=-1)  # (B, N)


def ensemble_probs(logits_k: torch.Tensor, T: float = 1.0, mean: str = "arithmetic") -> torch.Tensor:
    """p_ens(T) from member logits (K, B, N) -> (B, N); rows sum to 1."""
    _check_mean(mean)
    if mean == "arithmetic":
        return F.softmax(logits_k.float() / T, dim=-1).mean(dim=0)  # (B, N)
    return ensemble_log_probs(logits_k, T, mean).exp()


def ensemble_centred_logits(logits_k: torch.Tensor) -> torch.Tensor:
    """Mean of the members' per-frame-centred logits (K, B, N) -> (B, N): the high-T limit target.

    For T -> infinity, mean_k softmax(z_k / T) ~ (1 + mean_k (z_k - mean(z_k)) / T) / N, so matching
    the ensemble's logits means matching this average.
    """
    z = logits_k.float()
    return (z - z.mean(dim=-1, keepdim=True)).mean(dim=0)


class Ensemble(nn.Module):
    """A frozen stacked ensemble: windows (B, 26, 40) -> member logits (K, B, N)."""

    def __init__(self, stacked: StackedDNN, mean: str = "arithmetic") -> None:
        super().__init__()
        _check_mean(mean)
        self.stacked = stacked
        self.mean = mean
        self.requires_grad_(False)
        self.eval()

    @property
    def num_members(self) -> int:
        return self.stacked.num_members

    @property
    def num_pdfs(self) -> int:
        return self.stacked.num_pdfs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stacked(x)  # (K, B, N)

    @torch.no_grad()
    def probs(self, x: torch.Tensor, T: float = 1.0) -> torch.Tensor:
        return ensemble_probs(self.stacked(x), T, self.mean)  # (B, N)

    @torch.no_grad()
    def log_probs(self, x: torch.Tensor, T: float = 1.0) -> torch.Tensor:
        return ensemble_log_probs(self.stacked(x), T, self.mean)  # (B, N)

    def train(self, mode: bool = True) -> Ensemble:
        """Always stays in eval mode (dropout off): the teachers are frozen."""
        return super().train(False)


def load_teachers(model_files: Sequence[str | Path], mean: str = "arithmetic") -> Ensemble:
    """Stack K teacher model files (``asr_kd.nn.models.save_model``) into one frozen Ensemble."""
    members = [load_model(p)[0] for p in model_files]
    log.info("loaded %d teachers (%d x %d -> %d)", len(members), members[0].hidden_layers,
             members[0].hidden_dim, members[0].num_pdfs)
    return Ensemble(StackedDNN.from_members(members), mean)


def log_posteriors(model: nn.Module, x: torch.Tensor, T: float = 1.0) -> torch.Tensor:
    """(B, 26, 40) windows -> (B, N) log-posteriors for an AcousticDNN, StackedDNN or Ensemble."""
    if isinstance(model, Ensemble):
        return model.log_probs(x, T)
    out = model(x)
    if out.dim() == 3:  # a StackedDNN: average its members like an arithmetic ensemble
        return ensemble_log_probs(out, T, "arithmetic")
    return F.log_softmax(out.float() / T, dim=-1)


@torch.no_grad()
def utterance_log_posteriors(
    model: nn.Module,
    feats: torch.Tensor,
    left: int = 20,
    right: int = 5,
    T: float = 1.0,
    batch_frames: int = 4096,
    precision: str = "auto",
) -> torch.Tensor:
    """Per-frame log p(state | window) for one utterance: feats (T_frames, 40) -> (T_frames, N).

    ``model`` is a single AcousticDNN (one teacher or a student) or an Ensemble (averaged
    posteriors). Frames are windowed with ``asr_kd.data.windows.utterance_windows`` (edges padded there).
    """
    from asr_kd.data.windows import utterance_windows

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    feats = torch.as_tensor(feats, dtype=torch.float32)
    windows = utterance_windows(feats, left=left, right=right)  # (T_frames, 26, 40)
    with inference_autocast(device, precision):
        out = [log_posteriors(model, windows[i : i + batch_frames].to(device), T).float().cpu()
               for i in range(0, windows.shape[0], batch_frames)]
    model.train(was_training)
    return torch.cat(out)  # (T_frames, N)


@torch.no_grad()
def batch_log_posteriors(
    model: nn.Module,
    feats: Sequence[torch.Tensor | np.ndarray],
    left: int = 20,
    right: int = 5,
    T: float = 1.0,
    batch_frames: int = 8192,
    precision: str = "auto",
) -> list[torch.Tensor]:
    """:func:`utterance_log_posteriors` of several utterances in one pass: their windows go through
    the model (on its device) in batches of ``batch_frames`` across utterance boundaries; returns
    one (T_frames, N) float32 CPU tensor per utterance. A row's output does not depend on the other
    rows of its batch (the same numbers as one utterance at a time)."""
    from asr_kd.data.windows import utterance_windows

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    lengths = [int(f.shape[0]) for f in feats]
    outs: list[torch.Tensor] = []
    pending: list[torch.Tensor] = []
    held = 0

    def flush() -> None:
        nonlocal held
        x = torch.cat(pending).to(device, non_blocking=True)  # (B, 26, 40)
        outs.append(log_posteriors(model, x, T).float())
        pending.clear()
        held = 0

    with inference_autocast(device, precision):
        for f in feats:
            w = utterance_windows(torch.as_tensor(f, dtype=torch.float32), left=left, right=right)  # (T, 26, 40)
            start = 0
            while start < w.shape[0]:
                take = min(batch_frames - held, w.shape[0] - start)
                pending.append(w[start : start + take])
                held += take
                start += take
                if held == batch_frames:
                    flush()
        if pending:
            flush()
    model.train(was_training)
    if not outs:
        return []
    return list(torch.cat(outs).cpu().split(lengths))  # device -> host once per pass


@torch.no_grad()
def frame_accuracy(
    model: nn.Module,
    batches: Iterable[dict[str, torch.Tensor]],
    device: str | torch.device = "cpu",
    max_frames: int = 0,
    desc: str = "frame accuracy",
    precision: str = "auto",
) -> dict[str, float | int | list[float]]:
    """Frame accuracy over dict batches ``{"x": (B, 26, 40), "y": (B,), ...}``.

    Returns ``{"frame_acc", "frames"}``; for a StackedDNN or Ensemble also ``member_frame_acc``
    (K values, from the same batched forward) with ``frame_acc`` being the ensemble's.
    ``max_frames`` > 0 stops after that many frames (for train-set accuracy on big corpora).
    """
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.long)
    member_correct: torch.Tensor | None = None
    frames = 0
    for batch in progress(batches, desc=desc, unit="batch", leave=False, mininterval=5.0):
        x, y = batch["x"].to(device), batch["y"].to(device)  # (B, 26, 40), (B,); soft targets ignored
        with inference_autocast(device, precision):
            out = model(x).float()  # (B, N) or (K, B, N)
        if out.dim() == 3:
            mean = model.mean if isinstance(model, Ensemble) else "arithmetic"
            pred = ensemble_log_probs(out, 1.0, mean).argmax(-1)  # (B,)
            hits = (out.argmax(-1) == y.unsqueeze(0)).sum(dim=1).cpu()  # (K,)
            member_correct = hits if member_correct is None else member_correct + hits
        else:
            pred = out.argmax(-1)  # (B,)
        correct += (pred == y).sum().cpu()
        frames += int(y.numel())
        if max_frames and frames >= max_frames:
            break
    model.train(was_training)
    if frames == 0:
        raise ValueError(f"{desc}: no frames to evaluate (empty data)")
    result: dict[str, float | int | list[float]] = {"frame_acc": correct.item() / frames, "frames": frames}
    if member_correct is not None:
        result["member_frame_acc"] = [c / frames for c in member_correct.tolist()]
    return result


_CACHE_ROWS = 128  # rows of p_ens(T) computed at once by cache_targets (K x 128 x N floats: ~2 MB at K=10, N=460)


@torch.no_grad()
def cache_targets(
    ensemble: Ensemble,
    windows: Iterable[tuple[torch.Tensor, torch.Tensor]],
    num_windows: int,
    temperatures: Sequence[float],
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float16,
    precision: str = "auto",
) -> dict[float, torch.Tensor]:
    """The ensemble's tempered soft targets for every window, computed in one pass for all T.

    ``windows`` yields ``(ids (B,), x (B, 26, 40))`` covering ids 0..num_windows-1 (e.g.
    ``InMemoryWindows.ordered_windows``). Returns ``{T: p_ens(T) (num_windows, N)}`` in ``dtype``
    (CPU memory: num_windows x N x len(T) x 2 bytes in float16). For small corpora only: large
    ones keep the online path, where the frozen ensemble runs inside each training step.
    """
    n = ensemble.num_pdfs
    out = {float(T): torch.empty(num_windows, n, dtype=dtype) for T in temperatures}
    seen = 0
    for ids, x in progress(windows, desc="ensemble targets", unit="batch", leave=False, mininterval=5.0):
        with inference_autocast(device, precision):
            logits = ensemble(x.to(device)).float()  # (K, B, N)
        for T, table in out.items():
            # by blocks of rows: each block's (K, rows, N) temporaries stay in the CPU's cache (the whole
            # batch's do not): half the time, the same numbers
            probs = torch.cat([ensemble_probs(logits[:, i : i + _CACHE_ROWS], T, ensemble.mean)
                               for i in range(0, logits.shape[1], _CACHE_ROWS)])
            table[ids] = probs.to("cpu", dtype)  # (B, N)
        seen += int(ids.numel())
    if seen != num_windows:
        raise ValueError(f"target cache covers {seen} windows, expected {num_windows}")
    return out
