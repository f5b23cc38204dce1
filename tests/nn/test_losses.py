"""Distillation losses: a hand-computed case, and the high-temperature gradient limit (paper 2.1)."""

import math

import pytest
import torch

from asr_kd.nn.losses import distillation_loss, matching_logits_loss, soft_cross_entropy


def test_distillation_loss_equals_hand_computed_value():
    # one frame, two classes: z_s = (0, ln 3) -> softmax(z_s) = (1/4, 3/4);
    # at T = 2: softmax(z_s / 2) = (1, sqrt 3) / (1 + sqrt 3)
    z = torch.tensor([[0.0, math.log(3.0)]])
    y = torch.tensor([0])
    p = torch.tensor([[0.6, 0.4]])
    hard = -math.log(0.25)
    q1 = 1 / (1 + math.sqrt(3))
    soft = -(0.6 * math.log(q1) + 0.4 * math.log(1 - q1))
    expected = 0.3 * hard + 0.7 * 4.0 * soft
    got = distillation_loss(z, y, p, T=2.0, hard_weight=0.3)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_weights_select_terms():
    torch.manual_seed(0)
    z = torch.randn(6, 5)
    y = torch.randint(0, 5, (6,))
    p = torch.softmax(torch.randn(6, 5), -1)
    ce = torch.nn.functional.cross_entropy(z, y)
    assert distillation_loss(z, y, p, T=5.0, hard_weight=1.0).item() == pytest.approx(ce.item(), rel=1e-6)
    soft = soft_cross_entropy(z, p, T=5.0)
    assert distillation_loss(z, y, p, T=5.0, hard_weight=0.0).item() == pytest.approx(25 * soft.item(), rel=1e-6)


def _soft_grad(z_s: torch.Tensor, z_t: torch.Tensor, T: float) -> torch.Tensor:
    z = z_s.clone().requires_grad_(True)
    p = torch.softmax(z_t / T, -1)
    soft_cross_entropy(z.unsqueeze(0), p.unsqueeze(0), T).backward()
    return z.grad


def test_soft_gradient_approaches_logit_difference_at_high_T():
    torch.manual_seed(0)
    n = 10
    z_s = torch.randn(n, dtype=torch.float64)
    z_t = torch.randn(n, dtype=torch.float64)
    z_s, z_t = z_s - z_s.mean(), z_t - z_t.mean()  # zero-mean logits
    limit = (z_s - z_t) / (n * 1.0)
    errors = []
    for T in (1.0, 10.0, 100.0, 1000.0):
        g = _soft_grad(z_s, z_t, T)  # dC/dz = (q - p) / T
        approx = limit / T**2
        errors.append(((g - approx).norm() / approx.norm()).item())
    assert errors[-1] < 1e-3
    assert errors == sorted(errors, reverse=True)  # the approximation improves as T grows
    # the exact gradient of the soft term is (q - p) / T at every T
    T = 2.0
    g = _soft_grad(z_s, z_t, T)
    torch.testing.assert_close(g, (torch.softmax(z_s / T, -1) - torch.softmax(z_t / T, -1)) / T)


def test_matching_logits_is_high_T_limit_of_scaled_soft_term():
    torch.manual_seed(1)
    n = 8
    z_t = torch.randn(1, n, dtype=torch.float64)
    z = torch.randn(1, n, dtype=torch.float64, requires_grad=True)
    matching_logits_loss(z, z_t).backward()
    g_match = z.grad.clone()
    z.grad = None
    T = 1000.0
    (T * T * soft_cross_entropy(z, torch.softmax(z_t / T, -1), T)).backward()
    # identical up to the centring, which the soft term ignores (a gradient summing to zero)
    torch.testing.assert_close(z.grad, g_match - g_match.mean(), rtol=1e-3, atol=1e-5)
    assert matching_logits_loss(z_t + 3.0, z_t).item() == pytest.approx(0.0, abs=1e-12)


# One frame, three states, T = 2: z_s = (0, 2 ln 2, 2 ln 3), so softmax(z_s) = (1, 4, 9) / 14 and
# softmax(z_s / 2) = (1, 2, 3) / 6; the hard label is state 1, w = 0.3.
Z3 = torch.tensor([[0.0, 2 * math.log(2.0), 2 * math.log(3.0)]])
Y3 = torch.tensor([1])
HARD3 = -math.log(4 / 14)


def test_one_loss_for_dense_targets_from_every_source_equals_hand_computed_value():
    from asr_kd.nn.target_sources import CachedTargets

    p = torch.tensor([[0.1, 0.2, 0.7]])
    soft = -(0.1 * math.log(1 / 6) + 0.2 * math.log(2 / 6) + 0.7 * math.log(3 / 6))
    expected = 0.3 * HARD3 + 0.7 * 4.0 * soft
    assert distillation_loss(Z3, Y3, p, T=2.0, hard_weight=0.3).item() == pytest.approx(expected, rel=1e-6)
    cache = torch.tensor([[0.5, 0.25, 0.25], [0.1, 0.2, 0.7]], dtype=torch.float16)  # window 1 is p
    batch = {"x": torch.zeros(1, 26, 40), "y": Y3, "ids": torch.tensor([1])}
    got = distillation_loss(Z3, Y3, CachedTargets(cache, 2.0).targets(batch), T=2.0, hard_weight=0.3)
    assert got.item() == pytest.approx(expected, rel=1e-3)  # the cache holds float16


def test_one_loss_for_stored_targets_equals_hand_computed_value():
    from asr_kd.nn.losses import SparseTargets
    from asr_kd.nn.target_sources import StoredTargets

    # top-1 target: state 2 with 0.7, tail 0.3; the student's mass outside state 2 is 1/2:
    # soft = -(0.7 ln(3/6) + 0.3 ln(1/2)) = ln 2
    expected = 0.3 * HARD3 + 0.7 * 4.0 * math.log(2.0)
    # the batch carries every stored T (B, nT, k); the student reads its column (1)
    batch = {"x": torch.zeros(1, 26, 40), "y": Y3, "topk_ids": torch.tensor([[[0], [2]]]),
             "topk_p": torch.tensor([[[0.9], [0.7]]])}
    targets = StoredTargets(1, 2.0).targets(batch)
    assert isinstance(targets, SparseTargets) and targets.tail.item() == pytest.approx(0.3)
    got = distillation_loss(Z3, Y3, targets, T=2.0, hard_weight=0.3)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # k = N: the sparse form is the dense loss
    p = torch.tensor([[0.1, 0.2, 0.7]])
    full = SparseTargets(torch.tensor([[0, 1, 2]]), p, torch.zeros(1))
    assert distillation_loss(Z3, Y3, full, 2.0, 0.3).item() == pytest.approx(
        distillation_loss(Z3, Y3, p, 2.0, 0.3).item(), rel=1e-6)


def test_matching_logits_targets_are_not_scaled_by_T_squared():
    from asr_kd.nn.losses import TeacherLogits

    torch.manual_seed(2)
    z, v, y = torch.randn(4, 5), torch.randn(4, 5), torch.randint(0, 5, (4,))
    want = 0.5 * torch.nn.functional.cross_entropy(z, y) + 0.5 * matching_logits_loss(z, v)
    for T in (1.0, 10.0):
        torch.testing.assert_close(distillation_loss(z, y, TeacherLogits(v), T, 0.5), want)
