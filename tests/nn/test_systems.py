"""Lightning systems: a teacher (single and stacked) learns a tiny task; checkpoints hold config + metrics."""

import torch

from asr_kd.nn.ensemble import Ensemble
from asr_kd.nn.models import AcousticDNN, StackedDNN, load_model
from asr_kd.nn.schedules import FrameLR
from asr_kd.nn.systems import DistillSystem, TeacherSystem
from asr_kd.nn.target_sources import OnlineTargets
from asr_kd.nn.train import train_run
from asr_kd.paths import TrainRunDir
from tests.train_helpers import NUM_PDFS, tiny_datamodule, tiny_train_config

ARCH = dict(hidden_layers=2, hidden_dim=32, num_pdfs=NUM_PDFS)


def test_teacher_learns_and_checkpoint_has_config_and_metrics(tmp_path):
    cfg = tiny_train_config(max_epochs=3)
    system = TeacherSystem(AcousticDNN(**ARCH, seed=0), cfg, steps_per_epoch=16, max_epochs=3,
                           run_config={"preset": "test"})
    metrics = train_run(system, tiny_datamodule(), cfg, tmp_path / "t0", key="k", max_epochs=3, progress_bar=False)
    hist = metrics["history"]
    assert len(hist) == 3 and metrics["epochs"] == 3
    assert hist[-1]["train_loss"] < 0.8 * hist[0]["train_loss"]
    assert metrics["dev_frame_acc"] > 1.5 / NUM_PDFS  # well above chance
    assert 0 <= metrics["test_frame_acc"] <= 1 and metrics["train_frames"] == 512
    run = TrainRunDir(tmp_path / "t0")
    ckpt = torch.load(run.last_ckpt, weights_only=False)
    assert ckpt["asr_kd"]["config"] == {"preset": "test"}
    assert ckpt["asr_kd"]["metrics"]["dev_frame_acc"] == hist[-1]["dev_frame_acc"]
    assert ckpt["asr_kd"]["train"]["lr"] == cfg.lr
    model, blob = load_model(run.model)
    assert blob["metrics"]["dev_frame_acc"] == metrics["dev_frame_acc"]
    assert run.done.exists()
    # a second call finds the finished run and trains nothing
    again = train_run(system, tiny_datamodule(), cfg, tmp_path / "t0", key="k", max_epochs=3, progress_bar=False)
    assert again == metrics


def test_stacked_teachers_match_separate_training(tmp_path):
    """Adam acts per element, so K stacked members trained on the same batches == K separate runs."""
    cfg = tiny_train_config(max_epochs=1)
    stacked = TeacherSystem(StackedDNN([10, 11], **ARCH), cfg, steps_per_epoch=16, max_epochs=1)
    m = train_run(stacked, tiny_datamodule(), cfg, tmp_path / "s", key="k", max_epochs=1, progress_bar=False)
    assert len(m["dev_frame_acc"]) == 2 and "dev_ensemble_frame_acc" in m
    for k, seed in enumerate([10, 11]):
        single = TeacherSystem(AcousticDNN(**ARCH, seed=seed), cfg, steps_per_epoch=16, max_epochs=1)
        ms = train_run(single, tiny_datamodule(), cfg, tmp_path / f"t{k}", key="k", max_epochs=1, progress_bar=False)
        assert abs(ms["dev_frame_acc"] - m["dev_frame_acc"][k]) < 0.02
        a, _ = load_model(TrainRunDir(tmp_path / "s").member_model(k))
        b, _ = load_model(TrainRunDir(tmp_path / f"t{k}").model)
        x = torch.randn(8, 26, 40)
        torch.testing.assert_close(a(x), b(x), rtol=1e-3, atol=1e-3)


def test_distill_student_learns_from_frozen_ensemble(tmp_path):
    cfg = tiny_train_config(max_epochs=2)
    teacher = Ensemble(StackedDNN([1, 2, 3], **ARCH))
    before = [p.clone() for p in teacher.parameters()]
    system = DistillSystem(AcousticDNN(**ARCH, seed=9), OnlineTargets(teacher, 2.0), cfg, hard_weight=0.5,
                           steps_per_epoch=16, max_epochs=2)
    m = train_run(system, tiny_datamodule(), cfg, tmp_path / "d", key="k", max_epochs=2, progress_bar=False)
    assert m["history"][-1]["train_loss"] < m["history"][0]["train_loss"]
    assert all(torch.equal(p, q) for p, q in zip(before, teacher.parameters()))  # teachers frozen
    ckpt = torch.load(TrainRunDir(tmp_path / "d").last_ckpt, weights_only=False)
    assert ckpt["asr_kd"]["T"] == 2.0
    assert not any(k.startswith("_t") or "stacked" in k for k in ckpt["state_dict"])
    assert ckpt["lr_schedulers"][0]["last_epoch"] == ckpt["global_step"] and "newbob" not in ckpt["asr_kd"]


def test_stacked_students_match_separate_students(tmp_path):
    """distill.stacked: students at two temperatures trained as one batched model, each on its own T's
    targets, == each trained alone (a step-counted schedule, the same for both: only the loss couples them)."""
    cfg = tiny_train_config(max_epochs=1)
    teacher = Ensemble(StackedDNN([1, 2, 3], **ARCH))
    temps = [1.0, 5.0]
    stacked = DistillSystem(StackedDNN([9, 9], **ARCH), [OnlineTargets(teacher, T) for T in temps], cfg,
                            hard_weight=0.5, steps_per_epoch=16, max_epochs=1)
    m = train_run(stacked, tiny_datamodule(), cfg, tmp_path / "s", key="k", max_epochs=1, progress_bar=False,
                  model_extra={"T": temps})
    assert len(m["dev_frame_acc"]) == 2
    x = torch.randn(8, 26, 40)
    for k, T in enumerate(temps):
        alone = DistillSystem(AcousticDNN(**ARCH, seed=9), OnlineTargets(teacher, T), cfg, hard_weight=0.5,
                              steps_per_epoch=16, max_epochs=1)
        ms = train_run(alone, tiny_datamodule(), cfg, tmp_path / f"T{T:g}", key="k", max_epochs=1, progress_bar=False)
        assert abs(ms["dev_frame_acc"] - m["dev_frame_acc"][k]) < 0.02
        a, blob = load_model(TrainRunDir(tmp_path / "s").member_model(k))
        b, _ = load_model(TrainRunDir(tmp_path / f"T{T:g}").model)
        assert blob["T"] == T  # each member's file names its own temperature
        torch.testing.assert_close(a(x), b(x), rtol=1e-3, atol=1e-3)
    assert torch.load(TrainRunDir(tmp_path / "s").last_ckpt, weights_only=False)["asr_kd"]["T"] == temps
    try:
        DistillSystem(StackedDNN([9, 9], **ARCH), [OnlineTargets(teacher, 1.0)], cfg, hard_weight=0.5)
    except ValueError as e:
        assert "2 student(s) but 1 soft-target source(s)" in str(e)
    else:
        raise AssertionError("a stack needs one source per member")


def _schedule(**kw) -> tuple[FrameLR, torch.optim.Optimizer]:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    total = kw.pop("total_steps", 0)
    return FrameLR(opt, tiny_train_config(lr=1.0, **kw), total), opt


def test_lr_schedules():
    import math

    s, _ = _schedule(warmup_steps=10, lr_schedule="cosine", min_lr_ratio=0.0, total_steps=100)
    assert abs(s.factor(0) - 0.1 * 0.5 * (1 + math.cos(0.0))) < 1e-12  # warm-up: 1/10 of the rate
    assert abs(s.factor(9) - 0.5 * (1 + math.cos(math.pi * 9 / 100))) < 1e-12  # warm-up done
    assert abs(s.factor(50) - 0.5) < 1e-9  # half way through 100 planned steps
    assert s.factor(100) < 1e-9
    nb, opt = _schedule(lr_schedule="newbob", warmup_steps=0, newbob_threshold=0.01)
    scales = []
    for acc in (0.30, 0.40, 0.405, 0.45, 0.46):  # ramping stops at the first gain < 0.01, then halves
        nb.newbob_update(acc)
        scales.append(nb.factor(0))
        assert opt.param_groups[0]["lr"] == scales[-1]  # the optimiser's rate follows at once
    assert scales == [1.0, 1.0, 0.5, 0.25, 0.125]
    state = nb.state_dict()
    assert (state["scale"], state["halving"], state["best"]) == (0.125, True, 0.46)
    again, opt2 = _schedule(lr_schedule="newbob", warmup_steps=0, newbob_threshold=0.01)
    again.load_state_dict(state)
    assert again.factor(0) == 0.125 and opt2.param_groups[0]["lr"] == 0.125


def test_running_train_sums_read_fp32_logits_as_before():
    """The running loss / accuracy sums from the fp32 logits the loss reads equal the member-mean
    hits of the bf16 logits (an fp32 copy of bf16 values has the same argmax), single and stacked."""
    cfg = tiny_train_config(max_epochs=1)
    y = torch.randint(0, NUM_PDFS, (64,), generator=torch.Generator().manual_seed(0))
    for model, shape in ((AcousticDNN(**ARCH, seed=0), (64, NUM_PDFS)),
                         (StackedDNN([0, 1, 2], **ARCH), (3, 64, NUM_PDFS))):
        system = TeacherSystem(model, cfg)
        z = torch.randn(*shape, generator=torch.Generator().manual_seed(1)).bfloat16()
        for _ in range(2):
            system._track_train(torch.tensor(1.5), z.float(), y)
        hits = (z.argmax(-1) == y).float()
        hits = hits.mean(0).sum() if z.dim() == 3 else hits.sum()
        torch.testing.assert_close(system._train_totals(), 2 * torch.tensor([1.5 * 64, hits.item(), 64.0]))
        assert not system._train_pending
