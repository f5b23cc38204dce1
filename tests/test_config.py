"""The config tree: presets load, overrides are type-checked, unknown keys are named."""

import dataclasses

import pytest

from asr_kd.work import key as work_key

from asr_kd.config import (
    PRESETS,
    ConfigError,
    RecipeConfig,
    from_dict,
    load_config,
    parse_set_args,
    to_dict,
)


@pytest.mark.parametrize("name", PRESETS)
def test_every_shipped_preset_loads(name):
    cfg = load_config(name)
    assert cfg.preset == name
    assert cfg.model.left_context == 20 and cfg.model.right_context == 5
    assert cfg.distill.hard_weight == 0.5


def test_a_preset_extends_another_with_its_own_values_on_top():
    tiny, wer = load_config("tiny"), load_config("tiny-wer")
    assert (wer.data.synthetic_size, wer.data.synthetic_text) == ("tiny-wer", "books")
    assert wer.distill.temperatures == tiny.distill.temperatures == (1.0, 2.0, 5.0, 10.0)
    assert tiny.distill.stacked and not wer.distill.stacked
    # everything else as the preset it extends
    same = dataclasses.replace(wer, preset="tiny", data=tiny.data,
                               distill=dataclasses.replace(wer.distill, stacked=True, student_max_epochs=7,
                                                           baseline_100="teacher0"),
                               decode=dataclasses.replace(wer.decode, student_scale="best"))
    assert same == tiny


def test_paper_preset_is_the_papers_setting():
    cfg = load_config("paper")
    assert (cfg.model.hidden_layers, cfg.model.hidden_dim) == (8, 2560)
    assert cfg.teachers.num_teachers == 10
    assert cfg.distill.temperatures == (1.0, 2.0, 5.0, 10.0)
    assert cfg.train.precision == "bf16-mixed"


def test_overrides_are_coerced_to_the_field_type():
    cfg = load_config("smoke", parse_set_args(["train.lr=0.05", "distill.temperatures=1,2", "teachers.stacked=false"]))
    assert cfg.train.lr == 0.05
    assert cfg.distill.temperatures == (1.0, 2.0)
    assert cfg.teachers.stacked is False


@pytest.mark.parametrize(
    "item, message",
    [
        ("train.lrr=1", "train.lrr"),
        ("nosuch.x=1", "nosuch.x"),
        ("train.max_epochs=two", "train.max_epochs"),
        ("teachers.stacked=maybe", "teachers.stacked"),
        ("features.cmvn=utterance", "features.cmvn"),
        ("distill.hard_weight=1.5", "distill.hard_weight"),
    ],
)
def test_bad_overrides_name_the_key(item, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_config("smoke", parse_set_args([item]))


@pytest.mark.parametrize("key", ["data.train_synthesizer", "data.cross_synth_utts_per_speaker",
                                 "data.cross_synth_dev_speakers", "data.synthetic_festival", "teachers.retune_epochs",
                                 "teachers.retune_synthesizer", "teachers.retune_lr", "decode.condition_scales"])
def test_a_retired_key_is_named_as_retired_in_one_line(key):
    with pytest.raises(ConfigError) as e:
        load_config("smoke", parse_set_args([f"{key}=1"]))
    message = str(e.value)
    assert "\n" not in message and message.startswith(f"{key} was retired") and "88e0600" in message
    assert "docs/experiments/" in message


def test_a_stored_run_config_with_retired_keys_loads_where_they_kept_the_work():
    """config.json of a run made before the retirement (every retired key, at its default; the
    tiny preset's decode.condition_scales) loads; one that used a retired option is refused."""
    old = to_dict(load_config("tiny"))
    old["data"].update(train_synthesizer="", cross_synth_utts_per_speaker=10, cross_synth_dev_speakers=0,
                       synthetic_festival=False)
    old["teachers"].update(retune_epochs=0, retune_synthesizer="", retune_lr=0.001)
    old["decode"]["condition_scales"] = [0.06]
    assert from_dict(old) == load_config("tiny")
    for section, key, value in (("data", "train_synthesizer", "espeak"), ("data", "synthetic_festival", True),
                                ("teachers", "retune_epochs", 1)):
        used = {**old, section: {**old[section], key: value}}
        with pytest.raises(ConfigError, match=f"made with {section}.{key}={value!r}, and {section}.{key} was retired"):
            from_dict(used)


def test_set_needs_key_equals_value():
    with pytest.raises(ConfigError, match="key=value"):
        parse_set_args(["train.lr"])


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown preset"):
        load_config("huge")


def test_config_is_frozen_and_round_trips_through_json():
    cfg = load_config("tiny", {"train.lr": "0.01"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.lr = 1.0  # type: ignore[misc]
    again = from_dict(to_dict(cfg))
    assert again == cfg
    assert work_key(again) == work_key(cfg)
    assert work_key(cfg) != work_key(RecipeConfig())


def test_runs_are_keyed_by_the_global_batch_not_the_per_process_one(monkeypatch):
    """train.batch_size is per process: 2 x 128 trains what 1 x 256 trains (the same run keys: a
    stage that re-runs finds its runs done), and moving 256 from 1 device to 2 doubles the global
    batch (the stage is stale and its runs train again)."""
    from asr_kd.config import TrainConfig, global_batch_size, load_config, train_work
    from asr_kd.runner import Stage
    from asr_kd.stages import teachers

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    one = TrainConfig(batch_size=256, devices="1")
    two_half = TrainConfig(batch_size=128, devices="2", strategy="ddp")
    two_full = TrainConfig(batch_size=256, devices="2", strategy="ddp")
    assert [global_batch_size(t) for t in (one, two_half, two_full)] == [256, 256, 512]
    assert work_key(train_work(one)) == work_key(train_work(two_half)) != work_key(train_work(two_full))
    assert global_batch_size(TrainConfig(batch_size=64, devices="0,1", num_nodes=2)) == 256
    monkeypatch.setenv("WORLD_SIZE", "4")  # a launched job (torchrun, srun) knows its size
    assert global_batch_size(TrainConfig(batch_size=64, devices="auto")) == 256
    monkeypatch.delenv("WORLD_SIZE")

    def stage_hash_input(**train):
        cfg = load_config("smoke", {f"train.{k}": str(v) for k, v in train.items()})
        return Stage.of(teachers).record(cfg)

    # the stage hashes the global batch: 2 ranks of 128 are 1 process of 256, 2 of 256 are not
    assert stage_hash_input(batch_size=256)["train"]["batch_size"] == 256
    assert stage_hash_input(batch_size=128, devices=2) == stage_hash_input(batch_size=256)
    assert stage_hash_input(batch_size=256, devices=2)["train"]["batch_size"] == 512
    assert stage_hash_input(batch_size=256) != stage_hash_input(batch_size=256, devices=2)


def test_evaluate_refuses_a_run_made_with_a_retired_option_in_one_line(tmp_path, capsys):
    from asr_kd import evaluate
    from asr_kd.fileio import write_json

    old = to_dict(load_config("smoke"))
    old["teachers"]["retune_epochs"] = 1
    write_json(tmp_path / "config.json", old)
    assert evaluate.main(["--exp-dir", str(tmp_path), "--data-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: this run directory was made with teachers.retune_epochs=1, and "
                              "teachers.retune_epochs was retired")
