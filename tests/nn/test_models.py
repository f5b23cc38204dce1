"""Acoustic DNNs: a stacked K-member model equals K separate models; parameter counts."""

import torch

from asr_kd.nn.models import (
    AcousticDNN,
    StackedDNN,
    count_parameters,
    dnn_parameter_count,
    load_model,
    save_model,
)

ARCH = dict(input_dim=26 * 40, hidden_layers=3, hidden_dim=32, num_pdfs=17)


def test_stacked_equals_separate_models_built_from_seeds():
    seeds = [1000, 1001, 1002]
    stacked = StackedDNN(seeds, **ARCH).eval()
    x = torch.randn(5, 26, 40)
    out = stacked(x)  # (K, B, N)
    assert out.shape == (3, 5, 17)
    for k, s in enumerate(seeds):
        single = AcousticDNN(**ARCH, seed=s).eval()
        torch.testing.assert_close(out[k], single(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(stacked.member(k)(x), single(x))


def test_from_members_round_trip_and_different_seeds_differ():
    members = [AcousticDNN(**ARCH, seed=s) for s in (3, 4)]
    with torch.no_grad():  # trained weights, not just the seeded init
        members[1].output.bias.add_(0.5)
    stacked = StackedDNN.from_members(members)
    x = torch.randn(4, 26 * 40)
    out = stacked(x)
    for k, m in enumerate(members):
        torch.testing.assert_close(out[k], m(x), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out[0], out[1])


def test_same_seed_same_model_regardless_of_global_rng():
    torch.manual_seed(1)
    a = AcousticDNN(**ARCH, seed=7)
    torch.manual_seed(2)
    b = AcousticDNN(**ARCH, seed=7)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


def test_parameter_count():
    model = AcousticDNN(**ARCH)
    expected = (1040 * 32 + 32) + 2 * (32 * 32 + 32) + (32 * 17 + 17)
    assert count_parameters(model) == expected == dnn_parameter_count(1040, 3, 32, 17)
    assert count_parameters(StackedDNN([0, 1, 2, 3], **ARCH)) == 4 * expected
    # the paper's model: 1040 inputs, 8 x 2560 ReLU, 14000 outputs: about 85 M parameters
    assert 84e6 < dnn_parameter_count(1040, 8, 2560, 14000) < 86e6


def test_save_and_load_model(tmp_path):
    model = AcousticDNN(**ARCH, seed=5)
    save_model(tmp_path / "m.pt", model, metrics={"frame_acc": 0.5})
    loaded, blob = load_model(tmp_path / "m.pt")
    x = torch.randn(2, 1040)
    torch.testing.assert_close(loaded(x), model.eval()(x))
    assert blob["metrics"] == {"frame_acc": 0.5}


def test_stacked_under_bf16_autocast_stays_bf16_and_matches_members():
    """Under autocast the stacked model casts its first layer's weight and bias before the layout
    copy: the logits are bf16, close to each member's own autocast forward and to fp32, and the
    gradients reach the fp32 parameters in fp32."""
    members = [AcousticDNN(1040, 2, 48, 30, seed=s) for s in (3, 4)]
    stacked = StackedDNN.from_members(members)
    x = torch.randn(16, 26, 40, generator=torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = stacked(x)
        singles = [m(x) for m in members]
    assert z.dtype == torch.bfloat16
    for k, zk in enumerate(singles):
        torch.testing.assert_close(z[k].float(), zk.float(), rtol=0.05, atol=0.05)
    torch.testing.assert_close(z.float(), stacked(x), rtol=0.05, atol=0.05)
    z.float().square().mean().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in stacked.parameters())
