"""The training stages' logic (asr_kd.stages._training): one 'finished' rule, run keys, which runs are trained
or skipped, the students' training rule, the Table-5 runs on their subset, which targets are cached."""

from __future__ import annotations

import pytest

from asr_kd import paths as paths_mod
from asr_kd.config import load_config
from asr_kd.fileio import write_json
from asr_kd.stages import _training as runs
from asr_kd.stages._training import student_train_config, subset_period
from asr_kd.nn.train import run_finished
from asr_kd.paths import RunPaths, TrainRunDir
from asr_kd.errors import InputError
from asr_kd.runner import StageIncomplete


def test_a_run_is_finished_only_with_its_own_key(tmp_path):
    run = TrainRunDir(tmp_path / "student-T2")
    assert not run_finished(run.root, "k1")
    write_json(run.key, {"key": "k1"})
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


# ---------------------------------------------------------------------------------------------
# Which runs a training stage plans, trains and skips (training itself replaced by a recorder)
# ---------------------------------------------------------------------------------------------
PDFS = 7


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    """A run directory with only shard indexes, and a fake data module (no shards are read)."""
    paths = RunPaths(tmp_path / "exp")
    for split in paths_mod.SPLITS:
        write_json(paths.shard_index(split), {"split": split, "num_pdfs": PDFS, "frames": 100, "shards": []})
    monkeypatch.setattr(runs, "shard_datamodule", lambda *a, **kw: ("datamodule", kw))
    return paths


def _finish(run_root, key, **metrics):
    """What train_run leaves behind: key, metrics, done marker."""
    run = TrainRunDir(run_root)
    write_json(run.key, key.stored() if hasattr(key, "stored") else {"key": key})
    write_json(run.metrics, {"dev_frame_acc": 0.5, "test_frame_acc": 0.4, "train_frame_acc": 0.6, "epochs": 1,
                             **metrics})
    write_json(run.done, {})


def _recorder(monkeypatch, finished: bool = True) -> list[tuple[str, str]]:
    """Replace train_run: record (run dir name, key) and leave a finished run."""
    calls: list[tuple[str, str]] = []

    def fake_train_run(system, dm, train, run_dir, *, key, **kw):
        calls.append((TrainRunDir(run_dir).root.name, key))
        if finished:
            _finish(run_dir, key)
        return {"dev_frame_acc": 0.5, "test_frame_acc": 0.4, "train_frame_acc": 0.6, "epochs": 1}

    monkeypatch.setattr(runs, "train_run", fake_train_run)
    return calls


def test_teacher_keys_change_with_what_a_run_computes_not_where(run_dir):
    cfg = load_config("smoke")
    key = runs._teacher_key(cfg, run_dir, seed=1000)
    assert runs._teacher_key(cfg, run_dir, seed=1001) != key
    assert runs._teacher_key(load_config("smoke", {"train.lr": "0.5"}), run_dir, 1000) != key
    assert runs._teacher_key(load_config("smoke", {"model.hidden_dim": "64"}), run_dir, 1000) != key
    # where and how often, and the same global batch over 2 devices: the same run
    where = {"train.devices": "2", "train.batch_size": "128", "train.num_workers": "3", "train.checkpoint_every_s": "7"}
    assert runs._teacher_key(load_config("smoke", where), run_dir, 1000) == key
    assert runs._teacher_key(load_config("smoke", {"train.devices": "2"}), run_dir, 1000) != key, "2 x the batch"
    write_json(run_dir.shard_index("dev"), {"split": "dev", "num_pdfs": PDFS, "frames": 99, "shards": []})
    assert runs._teacher_key(cfg, run_dir, 1000) != key, "new shards retrain"


def test_student_keys_change_with_what_a_student_reads_only(run_dir):
    """Issue 32 item 3: a student's key holds its slice (its T, its hard-target weight, the teachers'
    keys, its epochs, how its targets are kept), not the whole distill section: the other students'
    temperatures or the Table-5 runs' epochs leave it alone."""
    cfg = load_config("smoke")

    def key(**sets):
        c = load_config("smoke", {k: str(v) for k, v in sets.items()})
        return runs._student_key(c, run_dir, 2.0, max_epochs=c.distill.student_max_epochs or None).key

    plain = key()
    assert runs._student_key(cfg, run_dir, 5.0).key != runs._student_key(cfg, run_dir, 2.0).key
    for unread in ({"distill.temperatures": "2,7"}, {"distill.subset_max_epochs": 9},
                   {"distill.baseline_100": "train"}, {"distill.subset_early_stopping_patience": 5},
                   {"train.num_workers": 3}):
        assert key(**unread) == plain, unread
    for read in ({"distill.hard_weight": 0.2}, {"teachers.seed_base": 7}, {"distill.student_max_epochs": 9},
                 {"distill.lr_schedule": "newbob"}, {"distill.ensemble_mean": "geometric"}, {"train.lr": 0.3}):
        assert key(**read) != plain, read
    assert runs._student_key(cfg, run_dir, 2.0, subset=True).key != runs._student_key(cfg, run_dir, 2.0).key


def test_a_student_an_older_asr_kd_finished_is_recognised_and_rekeyed(run_dir):
    """Students keyed by the whole distill section (asr-kd before the work slices) are not
    retrained: the run is found finished, and its key file then records today's key."""
    from asr_kd.fileio import read_json
    from asr_kd.nn.train import _prepare_run_dir
    from asr_kd.stages import _legacy_keys

    cfg = load_config("smoke")
    key = runs._student_key(cfg, run_dir, 2.0)
    _finish(run_dir.student_dir(2.0), _legacy_keys.distill_key(cfg, runs.data_key(run_dir), T=2.0, matching=False,
                                                                 subset=False))
    assert run_finished(run_dir.student_dir(2.0), key)
    assert _prepare_run_dir(TrainRunDir(run_dir.student_dir(2.0)), key) is not None
    assert read_json(TrainRunDir(run_dir.student_dir(2.0)).key) == key.stored()
    other = runs._student_key(load_config("smoke", {"distill.hard_weight": "0.1"}), run_dir, 2.0)
    assert not run_finished(run_dir.student_dir(2.0), other)


def test_finished_teachers_are_skipped_and_the_rest_trained(run_dir, monkeypatch):
    cfg = load_config("smoke", {"teachers.stacked": "false"})
    calls = _recorder(monkeypatch)
    _finish(run_dir.teacher_dir(1), runs._teacher_key(cfg, run_dir, cfg.teachers.seed_base + 1))
    real = runs.train_run

    def skip_finished(system, dm, train, run_dir_, *, key, **kw):  # train_run's own first step
        if runs.run_finished(run_dir_, key):
            return {}
        return real(system, dm, train, run_dir_, key=key, **kw)

    monkeypatch.setattr(runs, "train_run", skip_finished)
    summary = runs.train_teachers(cfg, run_dir)
    assert [name for name, _ in calls] == ["teacher-0", "teacher-2"]
    assert summary["num_teachers"] == 3 and summary["num_pdfs"] == PDFS
    assert [t["seed"] for t in summary["teachers"]] == [1000, 1001, 1002]


def test_one_teacher_of_a_job_array_is_a_stage_incomplete(run_dir, monkeypatch):
    calls = _recorder(monkeypatch)
    cfg = load_config("smoke", {"teachers.only": "1"})
    with pytest.raises(StageIncomplete, match=r"teachers \[0, 2\] are not trained yet"):
        runs.train_teachers(cfg, run_dir)
    assert [name for name, _ in calls] == ["teacher-1"]
    with pytest.raises(InputError, match="teachers.only=3 but teachers.num_teachers=3"):
        runs.train_teachers(load_config("smoke", {"teachers.only": "3"}), run_dir)


def test_a_stacked_run_is_skipped_when_every_member_is_finished(run_dir, monkeypatch):
    cfg = load_config("smoke")  # teachers.stacked: true
    calls = _recorder(monkeypatch, finished=False)
    for k, seed in enumerate(runs.teacher_seeds(cfg)):
        _finish(run_dir.teacher_dir(k), runs._teacher_key(cfg, run_dir, seed))
    runs.train_teachers(cfg, run_dir)
    assert calls == []


class FakeEnsemble:
    num_pdfs = PDFS


def test_students_table5_and_which_targets_are_cached(run_dir, monkeypatch):
    cfg = load_config("smoke", {"distill.temperatures": "1,5"})  # cache_targets: true; baseline_100: teacher0
    _finish(run_dir.teacher_dir(0), "teacher", train_frame_acc=0.9)
    # T=1 finished before
    _finish(run_dir.student_dir(1.0), runs._student_key(cfg, run_dir, 1.0, max_epochs=cfg.distill.student_max_epochs or None))
    monkeypatch.setattr(runs, "load_ensemble", lambda cfg, paths: FakeEnsemble())
    cached: list[list[float]] = []
    monkeypatch.setattr(runs, "_target_cache", lambda cfg, ens, dm, ts: cached.append(list(ts)) or
                        {float(t): f"targets-T{t:g}" for t in ts})
    runs_made: list[dict] = []

    def fake_distill(cfg, paths, dm, ens, run_dir_, *, T, subset=False, cached=None, **kw):
        runs_made.append({"dir": TrainRunDir(run_dir_).root.name, "T": T, "subset": subset, "cached": cached,
                          "data": dm[1]})
        dev = {1.0: 0.61, 5.0: 0.64}.get(T, 0.5)
        return {"dev_frame_acc": dev, "test_frame_acc": 0.5, "train_frame_acc": 0.7, "epochs": 1}

    def fake_hard(cfg, paths, dm, pdfs, run_dir_, *, subset, **kw):
        runs_made.append({"dir": TrainRunDir(run_dir_).root.name, "subset": subset, "data": dm[1]})
        return {"dev_frame_acc": 0.4, "test_frame_acc": 0.3, "train_frame_acc": 0.9, "epochs": 2}

    monkeypatch.setattr(runs, "_distill_run", fake_distill)
    monkeypatch.setattr(runs, "_hard_run", fake_hard)
    summary = runs.train_students(cfg, run_dir)
    assert cached[0] == [5.0], "only the unfinished student's targets are computed"
    assert [(r["dir"], r.get("T")) for r in runs_made] == [("T1", 1.0), ("T5", 5.0), ("table5-baseline_3", None),
                                                           ("table5-soft_3", 5.0)]
    assert runs_made[1]["cached"] == "targets-T5"
    subset = {"subset_fraction": cfg.distill.subset_fraction, "subset_seed": cfg.distill.subset_seed,
              "subset_unit": cfg.distill.subset_unit, "return_ids": True, "targets_dir": None}
    assert runs_made[2]["subset"] and runs_made[2]["data"] == subset  # the Table-5 subset, the same for both
    assert runs_made[3]["subset"] and runs_made[3]["data"] == subset
    t5 = summary["table5"]
    assert [r["system"] for r in t5] == list(paths_mod.TABLE5_RUNS)
    assert t5[0]["source"] == "teacher 0" and t5[0]["train_frame_acc"] == 0.9  # baseline_100 reuses teacher 0
    assert t5[2]["T"] == 5.0, "soft_3 uses the student temperature best on dev"
    assert [s["T"] for s in summary["students"]] == [1.0, 5.0]


def test_stacked_students_train_once_and_land_in_their_own_directories(run_dir, monkeypatch):
    """distill.stacked: the students of every T train as one run (one call), each member is then a
    finished run in its T directory under a key that names the stack; a second pass trains nothing;
    the Table-5 runs still train alone."""
    cfg = load_config("smoke", {"distill.temperatures": "1,5", "distill.stacked": "true"})
    _finish(run_dir.teacher_dir(0), "teacher", train_frame_acc=0.9)
    monkeypatch.setattr(runs, "load_ensemble", lambda cfg, paths: FakeEnsemble())
    monkeypatch.setattr(runs, "_target_cache", lambda cfg, ens, dm, ts: {float(t): f"targets-T{t:g}" for t in ts})

    class Source:
        num_pdfs = None

        def __init__(self, T):
            self.T = T

    monkeypatch.setattr(runs, "_soft_targets", lambda cfg, ens, T, **kw: Source(T))
    calls = []

    def fake_train_run(system, dm, train, run_dir_, *, key, **kw):
        run = TrainRunDir(run_dir_)
        if run_finished(run.root, key):
            return runs.read_json(run.metrics)
        calls.append((run.root.name, getattr(system, "temperatures", None)))
        k = 2 if run.root.name == "stacked" else 1
        metrics = {f"{s}_frame_acc": ([0.6, 0.7] if k == 2 else 0.5) for s in ("dev", "test", "train")}
        _finish(run.root, key, **metrics, history=[{"epoch": 0, "dev_frame_acc": 0.65, "dev_member_frame_acc": [0.6, 0.7]}])
        for m in range(k):
            run.member_model(m).write_bytes(b"model %d" % m)
        return metrics

    monkeypatch.setattr(runs, "train_run", fake_train_run)
    summary = runs.train_students(cfg, run_dir)
    assert calls[0] == ("stacked", [1.0, 5.0]), "one run for both students"
    assert [c[0] for c in calls[1:]] == ["table5-baseline_3", "table5-soft_3"]
    stacked_keys = [runs._student_key(cfg, run_dir, T, max_epochs=cfg.distill.student_max_epochs or None) for T in (1.0, 5.0)]
    solo = load_config("smoke", {"distill.temperatures": "1,5"})
    for k, (T, key) in enumerate(zip((1.0, 5.0), stacked_keys)):
        assert run_finished(run_dir.student_dir(T), key)
        assert key.record["stacked_with"] == [1.0, 5.0]
        assert key.key != runs._student_key(solo, run_dir, T, max_epochs=solo.distill.student_max_epochs or None).key
        member = runs.read_json(TrainRunDir(run_dir.student_dir(T)).metrics)
        assert member["trained_in"] == "stacked" and member["dev_frame_acc"] == [0.6, 0.7][k]
        assert TrainRunDir(run_dir.student_dir(T)).model.read_bytes() == b"model %d" % k
    assert [s["dev"]["frame_acc"] for s in summary["students"]] == [0.6, 0.7]
    soft3 = runs._student_key(cfg, run_dir, 5.0, subset=True, max_epochs=runs.subset_epochs(cfg))
    assert "stacked_with" not in soft3.record, "the Table-5 soft run trains alone"
    calls.clear()
    runs.train_students(cfg, run_dir)
    assert calls == [], "everything finished: nothing trains again"
