"""The config tree: presets load, overrides are type-checked, unknown keys are named."""

import dataclasses

import pytest

from asr_kd.config import (
    PRESETS,
    ConfigError,
    RecipeConfig,
    config_hash,
    from_dict,
    load_config,
    parse_set_args,
    to_dict,
    train_synthesizers,
)


@pytest.mark.parametrize("name", PRESETS)
def test_every_shipped_preset_loads(name):
    cfg = load_config(name)
    assert cfg.preset == name
    assert cfg.model.left_context == 20 and cfg.model.right_context == 5
    assert cfg.distill.hard_weight == 0.5


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
        ("data.train_synthesizer=festival", "data.train_synthesizer"),  # festival speakers are train-only
        ("data.train_synthesizer=espeak,flite", "data.train_synthesizer"),  # nothing left to test across
        ("data.train_synthesizer=espeak,mbrola", "data.train_synthesizer"),
    ],
)
def test_bad_overrides_name_the_key(item, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_config("smoke", parse_set_args([item]))


def test_train_synthesizer_names_a_set_of_synthesizers():
    assert train_synthesizers("") == ()
    assert train_synthesizers("festival, espeak") == train_synthesizers("espeak,festival") == ("espeak", "festival")
    cfg = load_config("smoke", parse_set_args(["data.train_synthesizer=flite,festival", "data.synthetic_festival=true"]))
    assert train_synthesizers(cfg.data.train_synthesizer) == ("festival", "flite") and cfg.data.synthetic_festival


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
    assert config_hash(again) == config_hash(cfg)
    assert config_hash(cfg) != config_hash(RecipeConfig())


def test_runs_are_keyed_by_the_global_batch_not_the_per_process_one(monkeypatch):
    """train.batch_size is per process: 2 x 128 trains what 1 x 256 trains (the same run keys: a
    stage that re-runs finds its runs done), and moving 256 from 1 device to 2 doubles the global
    batch (the stage is stale and its runs train again)."""
    from asr_kd.config import TrainConfig, global_batch_size, load_config, train_result_keys
    from asr_kd.runner import selected_config
    from asr_kd.stages.teachers import READS

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    one = TrainConfig(batch_size=256, devices="1")
    two_half = TrainConfig(batch_size=128, devices="2", strategy="ddp")
    two_full = TrainConfig(batch_size=256, devices="2", strategy="ddp")
    assert [global_batch_size(t) for t in (one, two_half, two_full)] == [256, 256, 512]
    assert train_result_keys(one) == train_result_keys(two_half) != train_result_keys(two_full)
    assert global_batch_size(TrainConfig(batch_size=64, devices="0,1", num_nodes=2)) == 256
    monkeypatch.setenv("WORLD_SIZE", "4")  # a launched job (torchrun, srun) knows its size
    assert global_batch_size(TrainConfig(batch_size=64, devices="auto")) == 256
    monkeypatch.delenv("WORLD_SIZE")

    def stage_hash_input(**train):
        cfg = load_config("smoke", {f"train.{k}": str(v) for k, v in train.items()})
        return selected_config(cfg, READS)

    # the stage hashes the global batch: 2 ranks of 128 are 1 process of 256, 2 of 256 are not
    assert stage_hash_input(batch_size=256)["train"]["batch_size"] == 256
    assert stage_hash_input(batch_size=128, devices=2) == stage_hash_input(batch_size=256)
    assert stage_hash_input(batch_size=256, devices=2)["train"]["batch_size"] == 512
    assert stage_hash_input(batch_size=256) != stage_hash_input(batch_size=256, devices=2)
