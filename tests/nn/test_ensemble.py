"""The ensemble: average of member softmaxes (arithmetic), the geometric option, one batched forward."""

import math

import pytest
import torch

from asr_kd.nn.ensemble import Ensemble, ensemble_log_probs, ensemble_probs, frame_accuracy, load_teachers
from asr_kd.nn.models import AcousticDNN, StackedDNN, save_model


def test_arithmetic_mean_of_member_softmaxes():
    torch.manual_seed(0)
    logits = torch.randn(4, 3, 6)  # (K, B, N)
    T = 2.0
    expected = sum(torch.softmax(logits[k] / T, -1) for k in range(4)) / 4
    torch.testing.assert_close(ensemble_probs(logits, T), expected)
    torch.testing.assert_close(ensemble_log_probs(logits, T).exp(), expected)


def test_geometric_mean_is_normalised_product():
    torch.manual_seed(0)
    logits = torch.randn(3, 2, 5)
    prod = torch.ones(2, 5)
    for k in range(3):
        prod = prod * torch.softmax(logits[k], -1) ** (1 / 3)
    expected = prod / prod.sum(-1, keepdim=True)
    got = ensemble_probs(logits, 1.0, "geometric")
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(got.sum(-1), torch.ones(2))
    with pytest.raises(ValueError, match="ensemble mean"):
        ensemble_probs(logits, 1.0, "median")


def test_single_member_ensemble_is_the_model():
    logits = torch.randn(1, 4, 7)
    torch.testing.assert_close(ensemble_log_probs(logits, 1.0), torch.log_softmax(logits[0], -1))
    assert math.isclose(ensemble_probs(logits).sum().item(), 4.0, rel_tol=1e-6)


def test_load_teachers_and_frame_accuracy(tmp_path):
    arch = dict(hidden_layers=2, hidden_dim=16, num_pdfs=5)
    members = [AcousticDNN(**arch, seed=s) for s in range(3)]
    files = []
    for k, m in enumerate(members):
        files.append(tmp_path / f"t{k}.pt")
        save_model(files[-1], m)
    ens = load_teachers(files)
    assert isinstance(ens, Ensemble) and ens.num_members == 3
    x = torch.randn(32, 26, 40)
    probs = ens.probs(x, T=1.0)
    expected = sum(torch.softmax(m.eval()(x), -1) for m in members) / 3
    torch.testing.assert_close(probs, expected, rtol=1e-5, atol=1e-6)
    y = probs.argmax(-1)
    y[:8] = (y[:8] + 1) % 5  # 24 of 32 right
    res = frame_accuracy(ens, [{"x": x[:16], "y": y[:16]}, {"x": x[16:], "y": y[16:]}])
    assert res["frame_acc"] == pytest.approx(24 / 32)
    assert res["frames"] == 32
    for k, m in enumerate(members):
        acc = (m(x).argmax(-1) == y).float().mean().item()
        assert res["member_frame_acc"][k] == pytest.approx(acc)
    # a StackedDNN is evaluated the same way (arithmetic mean)
    assert frame_accuracy(StackedDNN.from_members(members), [{"x": x, "y": y}])["frame_acc"] == pytest.approx(24 / 32)


def test_utterance_log_posteriors_for_model_and_ensemble():
    from asr_kd.nn.ensemble import utterance_log_posteriors
    from asr_kd.data.windows import utterance_windows

    arch = dict(hidden_layers=2, hidden_dim=16, num_pdfs=5)
    members = [AcousticDNN(**arch, seed=s).eval() for s in range(3)]
    feats = torch.randn(37, 40)  # (T, 40)
    windows = utterance_windows(feats)  # (T, 26, 40)
    single = utterance_log_posteriors(members[0], feats, batch_frames=10, precision="32-true")  # vs fp32 below
    assert single.shape == (37, 5)
    torch.testing.assert_close(single, torch.log_softmax(members[0](windows), -1))
    ens = Ensemble(StackedDNN.from_members(members))
    got = utterance_log_posteriors(ens, feats, batch_frames=16, precision="32-true")
    expected = torch.log(sum(torch.softmax(m(windows), -1) for m in members) / 3)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got.exp().sum(-1), torch.ones(37))


def test_cached_targets_equal_the_online_ensemble_and_give_the_same_loss():
    from asr_kd.nn.ensemble import cache_targets
    from asr_kd.nn.losses import distillation_loss
    from asr_kd.nn.target_sources import CachedTargets, OnlineTargets

    members = [AcousticDNN(1040, 1, 16, 5, seed=s) for s in range(3)]
    ens = Ensemble(StackedDNN.from_members(members))
    x = torch.randn(10, 26, 40)
    batches = [(torch.arange(0, 4), x[:4]), (torch.arange(4, 10), x[4:])]
    cache = cache_targets(ens, batches, 10, [1.0, 5.0])
    assert set(cache) == {1.0, 5.0} and cache[5.0].shape == (10, 5)
    for T in (1.0, 5.0):
        torch.testing.assert_close(cache[T].float(), ens.probs(x, T), atol=2e-3, rtol=0)
    # a student's loss on a shuffled batch is the same with looked-up and online targets
    ids = torch.tensor([7, 2, 9])
    z, y = torch.randn(3, 5), torch.tensor([0, 3, 1])
    batch = {"x": x[ids], "y": y, "ids": ids}
    online = distillation_loss(z, y, OnlineTargets(ens, 5.0).targets(batch), 5.0, 0.5)
    cached = distillation_loss(z, y, CachedTargets(cache[5.0], 5.0).targets(batch), 5.0, 0.5)
    torch.testing.assert_close(online, distillation_loss(z, y, ens.probs(x[ids], 5.0), 5.0, 0.5))
    torch.testing.assert_close(cached, online, atol=5e-3, rtol=1e-3)
    with pytest.raises(ValueError, match="covers 4 windows"):
        cache_targets(ens, batches[:1], 10, [1.0])
