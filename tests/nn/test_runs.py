"""The training stages' planning rules: one 'finished' rule, the students' training rule, Table-5 pace."""

from __future__ import annotations

from asr_kd.config import load_config
from asr_kd.fileio import write_json
from asr_kd.paths import TrainRunDir
from asr_kd.nn.runs import student_train_config, subset_period
from asr_kd.nn.train import run_finished


def test_a_run_is_finished_only_with_its_own_key(tmp_path):
    run = TrainRunDir(tmp_path / "student-T2")
    assert not run_finished(run.root, "k1")
    write_json(run.root / "RUN_KEY.json", {"key": "k1"})
    write_json(run.metrics, {"dev_frame_acc": 0.5})
    assert not run_finished(run.root, "k1"), "no done marker yet: a killed run"
    write_json(run.done, {})
    assert run_finished(run.root, "k1")
    assert not run_finished(run.root, "k2"), "a finished run with other settings must be retrained"


def test_students_follow_the_distill_rule_teachers_the_train_rule():
    cfg = load_config("smoke", {"distill.lr_schedule": "newbob", "distill.newbob_stop_threshold": "0.002"})
    rule = student_train_config(cfg)
    assert (rule.lr_schedule, rule.newbob_stop_threshold) == ("newbob", 0.002)
    assert (cfg.train.lr_schedule, cfg.train.newbob_stop_threshold) == ("cosine", 0.0)
    assert rule.lr == cfg.train.lr and rule.batch_size == cfg.train.batch_size
    assert student_train_config(load_config("smoke")) == load_config("smoke").train  # unset: the same rule


def test_a_subset_epoch_can_have_the_steps_of_a_full_epoch():
    auto = {"distill.subset_passes_per_epoch": "0"}
    assert subset_period(load_config("smoke", {**auto, "distill.subset_fraction": "0.03"})) == 33
    assert subset_period(load_config("smoke", {**auto, "distill.subset_fraction": "1.0"})) == 1
    assert subset_period(load_config("smoke", {"distill.subset_fraction": "0.03"})) == 1  # default: one pass
