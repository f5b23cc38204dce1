"""Distillation objectives (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural
Network", section 2): soft cross-entropy at temperature T (dense, or against stored top-k + tail
targets), the high-temperature limit "matching logits", and the one weighted hard + soft loss of
every student, :func:`distillation_loss`, whatever form its targets take (the T^2 factor is
applied there only).

All losses are means over the frames of a batch (B frames, N classes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import torch
import torch.nn.functional as F


def soft_cross_entropy(student_logits: torch.Tensor, target_probs: torch.Tensor, T: float = 1.0) -> torch.Tensor:
    """``mean_b CE(p_b, softmax(z_b / T)) = -mean_b sum_i p_bi log q_bi`` (no T^2 factor).

    student_logits: (B, N) raw logits z; target_probs: (B, N) rows summing to 1 (already at T).
    Its gradient wrt z_i is ``(q_i - p_i) / (T * B)`` (paper eq. 2, per frame).
    """
    log_q = F.log_softmax(student_logits.float() / T, dim=-1)  # (B, N)
    return -(target_probs.float() * log_q).sum(dim=-1).mean()


# A tail probability under e^-100 contributes nothing; the floor keeps 0 * log(0) finite (k = N).
_LOG_TAIL_FLOOR = -100.0
_TAIL_MASK_BELOW = 80.0


def sparse_tail(top_probs: torch.Tensor) -> torch.Tensor:
    """The target's mass outside its stored top k: ``1 - sum q`` (B,), clamped at 0 (float16 sums)."""
    return (1.0 - top_probs.float().sum(-1)).clamp(min=0.0)


def sparse_soft_cross_entropy(student_logits: torch.Tensor, top_idx: torch.Tensor, top_probs: torch.Tensor,
                              T: float = 1.0, tail: torch.Tensor | None = None) -> torch.Tensor:
    """The soft cross-entropy against stored top-k targets with a tail bucket (no T^2 factor)::

        -mean_b [ sum_{i in top-k} q_bi log p_bi + q_tail log(1 - sum_{i in top-k} p_bi) ]

    where ``p = softmax(z / T)`` is the student's and ``q_tail = 1 - sum q_bi`` the target's mass
    outside its top k (``tail``, default :func:`sparse_tail`): the dense cross-entropy of the two
    distributions with the states outside the top k merged into one class. With k = N it is the
    dense ``soft_cross_entropy``.

    student_logits: (B, N); top_idx: (B, k) int state ids; top_probs: (B, k) p_ens(T) of those states.
    """
    log_p = F.log_softmax(student_logits.float() / T, dim=-1)  # (B, N)
    idx = top_idx.long()
    q = top_probs.float()  # (B, k)
    top = (q * log_p.gather(-1, idx)).sum(-1)  # (B,)
    q_tail = sparse_tail(q) if tail is None else tail.float()  # (B,)
    # log of the student's mass outside the top k: a logsumexp over the other states. The top k are
    # masked by a constant _TAIL_MASK_BELOW nats below the row's largest log-probability, not by
    # -inf: exp of a number below -87 underflows (float32), and on x86 CPUs that path runs ~10x
    # slower. The masked states then add at most k * e^-80 (< 1e-33) to the tail's mass: its log is
    # exact for any tail above ~1e-30, and a smaller one reads as ~ -76 instead of the floor.
    fill = log_p.detach().amax(-1, keepdim=True) - _TAIL_MASK_BELOW  # (B, 1)
    rest = log_p.scatter(-1, idx, fill.expand(-1, idx.shape[-1]))  # (B, N)
    log_tail = torch.logsumexp(rest, dim=-1).clamp(min=_LOG_TAIL_FLOOR)  # (B,)
    return -(top + q_tail * log_tail).mean()


@dataclass(frozen=True)
class SparseTargets:
    """A batch's stored soft targets at one T: the top k states of p_ens(T) and the mass of the rest.

    ids: (B, k) state ids; probs: (B, k) their p_ens(T); tail: (B,) ``1 - sum probs`` (the tail bucket).
    """

    ids: torch.Tensor
    probs: torch.Tensor
    tail: torch.Tensor


@dataclass(frozen=True)
class TeacherLogits:
    """The ensemble's per-frame centred logits (B, N): the targets of the matching-logits limit."""

    logits: torch.Tensor


SoftTargetBatch = Union[torch.Tensor, SparseTargets, TeacherLogits]
"""What a soft-target source gives for a batch: dense p_ens(T) (B, N), stored top-k + tail, or logits."""


def distillation_terms(student_logits: torch.Tensor, targets_hard: torch.Tensor, targets: SoftTargetBatch,
                       T: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The two unweighted terms of :func:`distillation_loss`: (hard CE at T = 1, soft term).

    The soft term by the form of ``targets``: dense probabilities (B, N) -> ``soft_cross_entropy``;
    :class:`SparseTargets` -> ``sparse_soft_cross_entropy`` (the same value when k = N);
    :class:`TeacherLogits` -> ``matching_logits_loss`` (T unused). No T^2 factor here.
    """
    hard = F.cross_entropy(student_logits.float(), targets_hard)
    if isinstance(targets, SparseTargets):
        soft = sparse_soft_cross_entropy(student_logits, targets.ids, targets.probs, T, targets.tail)
    elif isinstance(targets, TeacherLogits):
        soft = matching_logits_loss(student_logits, targets.logits)
    else:
        soft = soft_cross_entropy(student_logits, targets, T)
    return hard, soft


def soft_scale(targets: SoftTargetBatch, T: float) -> float:
    """The factor of the soft term in :func:`distillation_loss`: T^2, or 1 for matching logits (whose
    gradient already equals the T^2-scaled soft gradient's high-T limit)."""
    return 1.0 if isinstance(targets, TeacherLogits) else T * T


def distillation_loss(
    student_logits: torch.Tensor,
    targets_hard: torch.Tensor,
    targets: SoftTargetBatch,
    T: float,
    hard_weight: float,
) -> torch.Tensor:
    """The paper's distillation objective (section 2; section 4 uses w = 0.5, T in {1, 2, 5, 10})::

        L = w * CE(y, softmax(z_s)) + (1 - w) * T^2 * CE(p_ens(T), softmax(z_s / T))

    student_logits: (B, N) student logits z_s; targets_hard: (B,) HMM-state ids y;
    targets: the ensemble's tempered posteriors ``mean_k softmax(z_k / T)`` as dense (B, N)
    probabilities or stored top-k + tail (:class:`SparseTargets`, whose cross-entropy merges the
    states outside the top k), or :class:`TeacherLogits` for the high-temperature limit (the soft
    term is then ``matching_logits_loss``, not scaled); T: temperature of the soft term;
    hard_weight: w, the weight of the hard-label term (at T = 1).

    The soft term's gradients scale as 1/T^2, so it is multiplied by T^2 (here, and only here:
    :func:`soft_scale`) to keep the relative contribution of the two terms unchanged when T changes.
    """
    hard, soft = distillation_terms(student_logits, targets_hard, targets, T)
    return hard_weight * hard + (1.0 - hard_weight) * soft_scale(targets, T) * soft


def matching_logits_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """High-temperature limit of the soft term (paper section 2.1): ``mean_b (1/2N) sum_i (z_i - v_i)^2``.

    Both (B, N) logit sets are centred per frame first (softmax ignores a constant shift; the
    paper's approximation assumes zero-mean logits). Its gradient ``(z_i - v_i) / (N B)`` equals the
    T^2-scaled soft cross-entropy gradient in the limit T -> infinity.
    """
    z = student_logits.float()
    v = teacher_logits.float()
    z = z - z.mean(dim=-1, keepdim=True)  # (B, N)
    v = v - v.mean(dim=-1, keepdim=True)  # (B, N)
    return 0.5 * ((z - v) ** 2).mean(dim=-1).mean()
