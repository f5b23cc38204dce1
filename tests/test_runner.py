"""Stage runner: markers, skip on re-run, stale detection, --force, upstream re-runs."""

from dataclasses import dataclass, field

import pytest

from asr_kd.config import load_config, to_dict
from asr_kd.fileio import _umask, read_json
from asr_kd.paths import RunPaths
from asr_kd.runner import Stage, StageError, StageRunner
from asr_kd.work import ADDED, Nothing


@dataclass(frozen=True)
class LrWork:
    lr: float


@dataclass(frozen=True)
class ExtraSetsWork:
    extra_test_subsets: tuple[str, ...]


def make_stages(calls):
    def first(cfg, paths):
        calls.append("first")
        (paths.stage_dir("first")).mkdir(parents=True, exist_ok=True)
        return {"n": 1}

    def second(cfg, paths):
        calls.append("second")
        return {"lr": cfg.train.lr}

    return [
        Stage("first", first, work=lambda cfg: cfg.data, after=()),
        Stage("second", second, work=lambda cfg: LrWork(cfg.train.lr), after=("first",)),
        Stage("third", None, work=Nothing.of, after=("second",)),
    ]


def test_runs_then_skips_and_writes_markers(tmp_path):
    calls = []
    cfg = load_config("smoke")
    paths = RunPaths(tmp_path)
    runner = StageRunner(make_stages(calls), cfg, paths)
    runner.run(stop="second")
    assert calls == ["first", "second"]
    marker = read_json(paths.marker("second"))
    assert marker["summary"] == {"lr": cfg.train.lr}
    assert marker["work"] == {"lr": cfg.train.lr} and "work_key" in marker
    assert "wall_time_s" in marker and "upstream" in marker
    runner.run(stop="second")
    assert calls == ["first", "second"], "a second run must skip finished stages"
    assert [r[2] for r in runner.listing()] == ["done", "done", "unavailable"]


def test_changed_config_stops_with_force_hint_then_force_reruns(tmp_path):
    calls = []
    paths = RunPaths(tmp_path)
    StageRunner(make_stages(calls), load_config("smoke"), paths).run(stop="second")
    changed = StageRunner(make_stages(calls), load_config("smoke", {"train.lr": "0.5"}), paths)
    assert changed.status(changed.by_name["second"]) == "stale"
    with pytest.raises(StageError, match=r"--force second") as e:
        changed.run(stop="second")
    assert "train.lr" in str(e.value)
    changed.run(stop="second", force=["second"])
    assert calls == ["first", "second", "second"]
    assert changed.status(changed.by_name["second"]) == "done"


def test_forcing_upstream_reruns_downstream(tmp_path):
    calls = []
    paths = RunPaths(tmp_path)
    runner = StageRunner(make_stages(calls), load_config("smoke"), paths)
    runner.run(stop="second")
    runner.run(stop="second", force=["first"])
    assert calls == ["first", "second", "first", "second"]


def test_unavailable_stage_stops_with_clear_message(tmp_path):
    runner = StageRunner(make_stages([]), load_config("smoke"), RunPaths(tmp_path))
    with pytest.raises(StageError, match="'third' is not built yet"):
        runner.run()


def test_stage_needs_upstream(tmp_path):
    runner = StageRunner(make_stages([]), load_config("smoke"), RunPaths(tmp_path))
    with pytest.raises(StageError, match="needs stage 'first'"):
        runner.run(start="second", stop="second")


def test_stage_names_and_numbers(tmp_path):
    runner = StageRunner(make_stages([]), load_config("smoke"), RunPaths(tmp_path))
    assert runner.resolve("1", 0) == runner.resolve("second", 0) == 1
    with pytest.raises(StageError, match="unknown stage"):
        runner.resolve("nope", 0)


def test_excluded_keys_do_not_make_a_stage_stale(tmp_path):
    calls = []

    def train(cfg, paths):
        calls.append("train")
        return {}

    from asr_kd.config import train_work

    stages = [Stage("train", train, work=lambda cfg: train_work(cfg.train), after=())]
    paths = RunPaths(tmp_path)
    StageRunner(stages, load_config("smoke"), paths).run()
    moved = StageRunner(stages, load_config("smoke", {"train.num_workers": "3", "train.accelerator": "cpu"}), paths)
    assert moved.status(stages[0]) == "done"
    # 4 devices at the same per-rank batch: 4 x the global batch, a different result
    spread = StageRunner(stages, load_config("smoke", {"train.devices": "4"}), paths)
    assert spread.status(stages[0]) == "stale"
    changed = StageRunner(stages, load_config("smoke", {"train.lr": "0.3"}), paths)
    assert changed.status(stages[0]) == "stale"


def test_marker_records_peak_memory(tmp_path):
    runner = StageRunner(make_stages([]), load_config("smoke"), RunPaths(tmp_path))
    runner.run(stop="first")
    marker = read_json(RunPaths(tmp_path).marker("first"))
    assert marker["peak_rss_mb"] > 10 and marker["peak_rss_children_mb"] >= 0


def test_stage_start_removes_temp_files_of_a_killed_run_and_files_follow_the_umask(tmp_path):
    calls = []
    paths = RunPaths(tmp_path)
    left = paths.stage_dir("first") / "graph" / ".HCLG.fst.abc123.tmp.fst"
    left.parent.mkdir(parents=True)
    left.write_bytes(b"x" * 100)
    keep = paths.stage_dir("first") / "graph" / "HCLG.fst"
    keep.write_bytes(b"y")
    StageRunner(make_stages(calls), load_config("smoke"), paths).run(stop="first")
    assert not left.exists() and keep.exists()
    mode = paths.marker("first").stat().st_mode & 0o777
    assert mode == 0o666 & ~_umask()  # e.g. 0644, not mkstemp's 0600


def test_check_refuses_a_changed_config_before_anything_runs(tmp_path):
    calls = []
    paths = RunPaths(tmp_path)
    StageRunner(make_stages(calls), load_config("smoke"), paths).run(stop="second")
    changed = StageRunner(make_stages(calls), load_config("smoke", {"train.lr": "0.5"}), paths)
    with pytest.raises(StageError, match="train.lr"):
        changed.check(stop="second")
    changed.check(stop="second", force=["second"])  # forced: accepted
    changed.check(stop="first")  # the changed stage is not in range: accepted


def test_a_stage_records_what_its_work_depends_on_not_where_it_runs():
    """A stage's marker records its slice of the config: a section put in whole loses the fields
    that say where or how fast the work runs (asr_kd.work.WHERE), and an option added after runs
    were made (ADDED) is left out at its default (those runs stay done) and recorded at any other value."""
    from asr_kd.stages import decode, prepare

    stage, cfg = Stage.of(decode), load_config("smoke")
    assert "num_jobs" not in stage.record(cfg)["decode"] and "chunk_utts" not in stage.record(cfg)["decode"]
    assert stage.record(load_config("smoke", {"decode.num_jobs": "7", "decode.chunk_utts": "3"})) == stage.record(cfg)
    assert "tune_draw" not in stage.record(cfg)["decode"]
    assert stage.record(load_config("smoke", {"decode.tune_draw": "seeded"}))["decode"]["tune_draw"] == "seeded"
    assert stage.record(load_config("smoke", {"decode.beam": "9"})) != stage.record(cfg)
    # the extra test sets are the conditions stage's, not the corpus prepare reads
    more = load_config("smoke", {"data.extra_test_subsets": "test-other"})
    assert Stage.of(prepare).record(more) == Stage.of(prepare).record(cfg)


def _as_an_older_asr_kd_wrote_it(paths: RunPaths, stage: str, config: dict) -> None:
    """Rewrite ``stage``'s marker as asr-kd wrote it before the work slices: ``config`` (the values
    its READS named: a section read whole as a dict, a key read alone by its dotted name), hashed."""
    from asr_kd.fileio import write_json
    from asr_kd.work import hash_record

    m = read_json(paths.marker(stage))
    m.pop("work", None), m.pop("work_key", None)
    m["config"], m["config_hash"] = config, hash_record(config)
    write_json(paths.marker(stage), m)


def _old_data_section(cfg) -> dict:
    """The data section as an older asr-kd's markers hashed it: without the options added later at
    the values that kept its work (config.NEUTRAL_DEFAULTS then)."""
    neutral = {("lm_vocab_size", 0), ("extra_test_subsets", ()), ("synthetic_text", "template")}
    return {k: v for k, v in to_dict(cfg.data).items() if (k, tuple(v) if isinstance(v, list) else v) not in neutral}


def test_markers_written_before_the_work_slices_are_recognised_and_rewritten(tmp_path):
    """Issue 32 item 3: a run finished by an older asr-kd stays done where today's config would
    have given its markers the same record; the skipped stage's marker is then rewritten in today's
    form, its run id kept (so the stages after it stay done). A recorded value today's config does
    not have makes the stage stale, and the refusal names it."""
    calls = []
    paths, cfg = RunPaths(tmp_path), load_config("smoke")
    StageRunner(make_stages(calls), cfg, paths).run(stop="second")
    run_id = read_json(paths.marker("first"))["run_id"]
    _as_an_older_asr_kd_wrote_it(paths, "first", {"data": _old_data_section(cfg)})
    _as_an_older_asr_kd_wrote_it(paths, "second", {"train.lr": cfg.train.lr})
    runner = StageRunner(make_stages(calls), cfg, paths)
    assert [r[2] for r in runner.listing()] == ["done", "done", "unavailable"]
    runner.run(stop="second")
    assert calls == ["first", "second"], "nothing re-runs"
    m = read_json(paths.marker("first"))
    assert m["run_id"] == run_id and "config" not in m and m["work"] == runner.by_name["first"].record(cfg)
    assert runner.status(runner.by_name["second"]) == "done"

    _as_an_older_asr_kd_wrote_it(paths, "second", {"train.lr": cfg.train.lr / 2})
    assert runner.status(runner.by_name["second"]) == "stale"
    with pytest.raises(StageError, match=r"train.lr.*--force second"):
        runner.check(stop="second")
    # an option added since, away from the value the old run had: stale too, named as a user sets it
    later = StageRunner(make_stages(calls), load_config("smoke", {"data.lm_vocab_size": "3"}), paths)
    _as_an_older_asr_kd_wrote_it(paths, "first", {"data": _old_data_section(cfg)})
    assert later.status(later.by_name["first"]) == "stale"
    with pytest.raises(StageError, match=r"data.lm_vocab_size: None -> 3"):
        later.check(stop="first")


def _as_made_before_the_retirement(paths: RunPaths, stage: str, old_keys: dict, section: str = "data") -> None:
    """Rewrite ``stage``'s marker as asr-kd 88e0600 wrote it: the config its READS named, with the
    retired keys (a section read whole holding them), hashed with them."""
    m = read_json(paths.marker(stage))
    config = m.get("config") or ({section: _old_data_section(load_config("smoke"))} if stage == "first" else {})
    for key, value in old_keys.items():
        if key.startswith(section + ".") and section in config:
            config[section][key.split(".", 1)[1]] = value
        else:
            config[key] = value
    _as_an_older_asr_kd_wrote_it(paths, stage, config)


def test_a_run_made_before_keys_were_retired_stays_done_where_they_kept_its_work(tmp_path):
    """Issue 32: markers of asr-kd 88e0600 hashed data.train_synthesizer and
    data.cross_synth_utts_per_speaker (a section read whole), and the tiny preset's
    decode.condition_scales (a key read alone). At the values of a run without the study the stage
    stays done; a marker of a run that used the study is stale, and check() refuses its run
    directory with one line that names the key, says it was retired and what to do."""
    from asr_kd.fileio import write_json

    calls = []
    cond = Stage("cond", lambda cfg, paths: {}, work=lambda cfg: ExtraSetsWork(cfg.data.extra_test_subsets), after=())
    stages = [*make_stages(calls)[:2], cond]
    paths = RunPaths(tmp_path)
    cfg = load_config("smoke")
    StageRunner(stages, cfg, paths).run()
    write_json(paths.config, to_dict(cfg))
    _as_made_before_the_retirement(paths, "first", {"data.train_synthesizer": "", "data.cross_synth_utts_per_speaker": 10})
    _as_made_before_the_retirement(paths, "cond", {"decode.condition_scales": [0.06]})
    runner = StageRunner(stages, cfg, paths)
    assert [r[2] for r in runner.listing()] == ["done", "done", "done"]
    runner.check()
    runner.run()
    assert calls == ["first", "second"], "nothing re-runs"

    _as_made_before_the_retirement(paths, "first", {"data.train_synthesizer": "espeak"})
    assert runner.status(runner.by_name["first"]) == "stale"
    old = to_dict(cfg)
    old["data"]["train_synthesizer"] = "espeak"
    write_json(paths.config, old)
    with pytest.raises(StageError) as e:
        runner.check()
    message = str(e.value)
    assert message.startswith("this run directory was made with data.train_synthesizer='espeak', and "
                              "data.train_synthesizer was retired from the recipe after commit 88e0600")
    assert "docs/experiments/cross-synthesizer.md" in message and "new --exp-dir" in message and "\n" not in message


def test_student_run_keys_are_those_of_runs_made_before_the_retirement():
    """The distill stage's run keys hashed the teachers section whole, re-tune keys included: at
    their defaults they are still hashed, so a --force distill of an old run reuses its students."""
    import dataclasses

    from asr_kd.retired import run_key_section
    from asr_kd.work import hash_record

    t = load_config("smoke").teachers
    old = {**to_dict(t), "retune_epochs": 0, "retune_synthesizer": "", "retune_lr": 1e-3}
    assert hash_record(run_key_section("teachers", to_dict(t))) == hash_record(old)
    assert run_key_section("data", {"root": ""}) == {"root": ""}
    assert not any(f.name.startswith("retune") for f in dataclasses.fields(t))


def test_a_stage_module_becomes_a_stage():
    from asr_kd.stages import teachers

    stage = Stage.of(teachers)
    assert (stage.name, stage.run, stage.work, stage.after) == ("teachers", teachers.run, teachers.work, ("shards",))
    assert stage.distributed and stage.doc == teachers.DOC


def test_stale_by_an_upstream_config_change_names_the_root_cause(tmp_path):
    """A stage that is stale only because a stage above it changed config (not re-run) says which
    stage and which keys, instead of an empty list."""
    calls = []
    paths = RunPaths(tmp_path)
    StageRunner(make_stages(calls), load_config("smoke"), paths).run(stop="second")
    changed = StageRunner(make_stages(calls), load_config("smoke", {"data.max_utts_per_split": "3"}), paths)
    second = changed.by_name["second"]
    assert changed.status(second) == "stale"
    reason = changed.stale_reason(second)
    assert "upstream stage 'first' is stale" in reason and "data.max_utts_per_split" in reason
    with pytest.raises(StageError, match="data.max_utts_per_split"):
        changed.run(start="second", stop="second")


def test_a_new_stage_version_refuses_an_older_run_with_its_note(tmp_path):
    """A stage whose work changed with the same config (the graph stage's decoding vocabulary, issue
    31) is refused, with what changed and the --force to give, rather than silently reused."""
    import dataclasses

    calls = []
    paths = RunPaths(tmp_path)
    old = make_stages(calls)
    StageRunner(old, load_config("smoke"), paths).run(stop="second")
    new = [old[0], dataclasses.replace(old[1], version=1, version_note="the vocabulary is the LM's"), old[2]]
    runner = StageRunner(new, load_config("smoke"), paths)
    assert runner.status(runner.by_name["second"]) == "stale"
    with pytest.raises(StageError, match=r"stage version 0 -> 1: the vocabulary is the LM's.*--force second"):
        runner.run(stop="second")
    runner.run(stop="second", force=["second"])
    assert calls == ["first", "second", "second"] and runner.status(runner.by_name["second"]) == "done"
    assert read_json(paths.marker("second"))["work"]["stage_version"] == 1


@dataclass(frozen=True)
class LrArpaWork:
    lr: float
    arpa: str = field(default="", metadata=ADDED)  # read since runs were made


def test_a_value_a_stage_began_to_read_later_is_left_out_at_its_default(tmp_path):
    import dataclasses

    calls = []
    paths = RunPaths(tmp_path)
    old = make_stages(calls)
    StageRunner(old, load_config("smoke"), paths).run(stop="second")
    reads_more = dataclasses.replace(old[1], work=lambda cfg: LrArpaWork(cfg.train.lr, cfg.decode.arpa))
    runner = StageRunner([old[0], reads_more, old[2]], load_config("smoke"), paths)
    assert runner.status(runner.by_name["second"]) == "done"
    runner = StageRunner([old[0], reads_more, old[2]], load_config("smoke", {"decode.arpa": "/x.arpa"}), paths)
    assert runner.status(runner.by_name["second"]) == "stale"


def test_the_graph_stage_declares_its_version():
    from asr_kd.stages import graph

    assert Stage.of(graph).version == 1 and "dev and test" in Stage.of(graph).version_note
