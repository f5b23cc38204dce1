"""Stage runner: markers, skip on re-run, stale detection, --force, upstream re-runs."""

import pytest

from asr_kd.config import load_config, to_dict
from asr_kd.fileio import _umask, read_json
from asr_kd.paths import RunPaths
from asr_kd.runner import Stage, StageError, StageRunner


def make_stages(calls):
    def first(cfg, paths):
        calls.append("first")
        (paths.stage_dir("first")).mkdir(parents=True, exist_ok=True)
        return {"n": 1}

    def second(cfg, paths):
        calls.append("second")
        return {"lr": cfg.train.lr}

    return [
        Stage("first", first, reads=("data",), after=()),
        Stage("second", second, reads=("train.lr",), after=("first",)),
        Stage("third", None, reads=(), after=("second",)),
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
    assert "config_hash" in marker and "wall_time_s" in marker and "upstream" in marker
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

    stages = [Stage("train", train, reads=("train", "!train.devices", "!train.num_workers", "!train.accelerator"),
                    after=())]
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


def test_read_but_unhashed_entries_leave_the_hash_alone():
    """'!' entries of READS (read, but reached through an upstream stage) change no stage's hash:
    a run directory made before they were declared stays done."""
    from asr_kd.runner import selected_config

    cfg = load_config("smoke")
    plain = ("decode", "!decode.num_jobs")
    more = (*plain, "!model", "!train.precision", "!teachers", "!distill", "!preset")
    assert selected_config(cfg, more) == selected_config(cfg, plain)
    assert "num_jobs" not in selected_config(cfg, plain)["decode"]


def test_an_option_added_later_leaves_finished_runs_done_at_its_neutral_value():
    """A key of NEUTRAL_DEFAULTS is out of the hash at that value (a run made before the option
    existed stays done after an upgrade) and in it at any other (changing it re-runs the stage)."""
    from asr_kd.config import NEUTRAL_DEFAULTS
    from asr_kd.runner import selected_config

    assert NEUTRAL_DEFAULTS["data.lm_vocab_size"] == 0
    neutral = {k.split(".", 1)[1] for k in NEUTRAL_DEFAULTS if k.startswith("data.")}
    assert {"lm_vocab_size", "extra_test_subsets"} <= neutral
    before = {"data": {k: v for k, v in to_dict(load_config("smoke").data).items() if k not in neutral}}
    assert selected_config(load_config("smoke"), ("data",)) == before
    changed = selected_config(load_config("smoke", {"data.lm_vocab_size": "3"}), ("data",))
    assert changed["data"]["lm_vocab_size"] == 3
    assert selected_config(load_config("smoke"), ("data.lm_vocab_size",)) == {}


def _as_made_before_the_retirement(paths: RunPaths, stage: str, old_keys: dict, section: str = "data") -> None:
    """Rewrite ``stage``'s marker as asr-kd 88e0600 wrote it: its config with the retired keys
    (a section read whole holding them), hashed with them."""
    from asr_kd.config import config_hash
    from asr_kd.fileio import write_json

    m = read_json(paths.marker(stage))
    for key, value in old_keys.items():
        if key.startswith(section + ".") and section in m["config"]:
            m["config"][section][key.split(".", 1)[1]] = value
        else:
            m["config"][key] = value
    m["config_hash"] = config_hash(m["config"])
    write_json(paths.marker(stage), m)


def test_a_run_made_before_keys_were_retired_stays_done_where_they_kept_its_work(tmp_path):
    """Issue 32: markers of asr-kd 88e0600 hashed data.train_synthesizer and
    data.cross_synth_utts_per_speaker (a section read whole), and the tiny preset's
    decode.condition_scales (a key read alone). At the values of a run without the study the stage
    stays done; a marker of a run that used the study is stale, and check() refuses its run
    directory with one line that names the key, says it was retired and what to do."""
    from asr_kd.fileio import write_json

    calls = []
    cond = Stage("cond", lambda cfg, paths: {}, reads=("data.extra_test_subsets",), after=())
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

    from asr_kd.config import config_hash
    from asr_kd.retired import run_key_section

    t = load_config("smoke").teachers
    old = {**to_dict(t), "retune_epochs": 0, "retune_synthesizer": "", "retune_lr": 1e-3}
    assert config_hash(run_key_section("teachers", to_dict(t))) == config_hash(old)
    assert run_key_section("data", {"root": ""}) == {"root": ""}
    assert not any(f.name.startswith("retune") for f in dataclasses.fields(t))


def test_a_stage_module_becomes_a_stage():
    from asr_kd.stages import teachers

    stage = Stage.of(teachers)
    assert (stage.name, stage.run, stage.reads, stage.after) == ("teachers", teachers.run, teachers.READS, ("shards",))
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
    assert read_json(paths.marker("second"))["config"]["stage_version"] == 1


def test_a_key_a_stage_began_to_read_later_is_neutral_at_its_old_value(tmp_path):
    import dataclasses

    calls = []
    paths = RunPaths(tmp_path)
    old = make_stages(calls)
    StageRunner(old, load_config("smoke"), paths).run(stop="second")
    reads_more = dataclasses.replace(old[1], reads=("train.lr", "decode.arpa"), neutral_reads=(("decode.arpa", ""),))
    runner = StageRunner([old[0], reads_more, old[2]], load_config("smoke"), paths)
    assert runner.status(runner.by_name["second"]) == "done"
    runner = StageRunner([old[0], reads_more, old[2]], load_config("smoke", {"decode.arpa": "/x.arpa"}), paths)
    assert runner.status(runner.by_name["second"]) == "stale"


def test_the_lang_and_graph_stages_declare_their_version_and_neutral_reads():
    from asr_kd.stages import graph, lang

    assert Stage.of(graph).version == 1 and "dev and test" in Stage.of(graph).version_note
    assert Stage.of(lang).neutral_reads == (("decode.arpa", ""),)
