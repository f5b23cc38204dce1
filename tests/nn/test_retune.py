"""The output-layer re-tune of the teachers (teachers.retune_epochs > 0): real training on tiny
shards. Only the output layer moves, only the chosen utterances are trained on, the later stages
get the re-tuned teachers, and new re-tune settings re-tune without training the teachers again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from asr_kd.config import ConfigError, load_config
from asr_kd.data.datamodule import shard_datamodule
from asr_kd.data.manifest import Utterance
from asr_kd.data.windows import InMemoryWindows
from asr_kd.fileio import write_json
from asr_kd.nn import runs
from asr_kd.nn.models import load_model
from asr_kd.paths import RunPaths, TrainRunDir
from asr_kd.runner import StageError
from asr_kd.stages import teachers as teachers_stage
from data_prep.synthetic import SPEAKERS_NAME, utterance_synthesizers
from tests.train_helpers import write_tiny_shards

CHOSEN = frozenset(f"train-{i:03d}" for i in range(8))  # 8 of the 16 training utterances


def _cfg(stacked: bool = True, **kw: str):
    return load_config("smoke", {
        "teachers.num_teachers": "2", "teachers.stacked": str(stacked).lower(), "model.hidden_layers": "2",
        "model.hidden_dim": "16", "train.max_epochs": "1", "train.batch_size": "32", "train.warmup_steps": "2",
        "train.precision": "32-true", "train.accelerator": "cpu", "train.devices": "1",
        "teachers.retune_epochs": "1", "teachers.retune_synthesizer": "espeak", "teachers.retune_lr": "0.01", **kw})


def _layers(path: Path) -> list[torch.Tensor]:
    model, _ = load_model(path)
    return [lin.weight.detach().clone() for lin in [*model.hidden, model.output]]


@pytest.mark.parametrize("stacked", [True, False], ids=["stacked", "one-by-one"])
def test_the_retune_moves_only_the_output_layer_on_the_chosen_utterances(tmp_path, monkeypatch, stacked):
    paths = write_tiny_shards(tmp_path / "exp")
    cfg = _cfg(stacked)
    trained_on = []

    def spy(*args, **kw):
        trained_on.append(kw.get("utterances"))
        return shard_datamodule(*args, **kw)

    monkeypatch.setattr(runs, "shard_datamodule", spy)
    summary = runs.train_teachers(cfg, paths, CHOSEN)
    assert trained_on == [None, CHOSEN], "the first phase on every utterance, the re-tune on the chosen ones"

    assert paths.teacher_dirs(cfg.teachers) == [paths.retuned_teacher_dir(k) for k in range(2)]
    for k in range(2):
        first, retuned = TrainRunDir(paths.teacher_dir(k)), TrainRunDir(paths.retuned_teacher_dir(k))
        before, after = _layers(first.model), _layers(retuned.model)
        for w0, w1 in zip(before[:-1], after[:-1]):
            assert torch.equal(w0, w1), "a hidden layer moved"
        assert not torch.equal(before[-1], after[-1]), "the output layer did not move"
        metrics = json.loads(retuned.metrics.read_text())
        assert metrics["train_frames"] == 16 * 32, "train frame accuracy is over the whole training set"
        assert metrics["epochs"] == 1
    assert summary["retune"].pop("wall_time_s") > 0
    assert summary["retune"] == {"epochs": 1, "lr": 0.01, "synthesizers": "espeak", "utterances": 8}
    for t in summary["teachers"]:
        assert set(t["before_retune"]) >= {"dev", "test"} and t["dev"]["frame_acc"] > 0
        assert (t["epochs"], t["retune_epochs"]) == (1, 1), "epochs: the first phase's; then the re-tune's"
    assert "dev_frame_acc_mean_before_retune" in summary
    # the ensemble (and through it every later stage) is made of the re-tuned teachers
    ens = runs.load_ensemble(cfg, paths)
    retuned0 = load_model(TrainRunDir(paths.retuned_teacher_dir(0)).model)[0]
    x = torch.randn(5, 26 * 40)
    with torch.no_grad():
        assert torch.allclose(ens(x)[0], retuned0(x), atol=1e-5)


def test_new_retune_settings_retune_without_training_the_teachers_again(tmp_path):
    paths = write_tiny_shards(tmp_path / "exp")
    runs.train_teachers(_cfg(), paths, CHOSEN)
    first = TrainRunDir(paths.teacher_dir(0)).model
    stamp, output = first.stat().st_mtime_ns, _layers(TrainRunDir(paths.retuned_teacher_dir(0)).model)[-1]

    runs.train_teachers(_cfg(**{"teachers.retune_lr": "0.05"}), paths, CHOSEN)
    assert first.stat().st_mtime_ns == stamp, "the first phase was trained again"
    assert not torch.equal(_layers(TrainRunDir(paths.retuned_teacher_dir(0)).model)[-1], output)

    off = _cfg(**{"teachers.retune_epochs": "0"})
    assert paths.teacher_dirs(off.teachers) == [paths.teacher_dir(k) for k in range(2)]
    summary = runs.train_teachers(off, paths)  # back to the first phase's teachers: nothing to train
    assert first.stat().st_mtime_ns == stamp and "retune" not in summary


def test_a_retune_on_no_utterance_is_an_error(tmp_path):
    paths = write_tiny_shards(tmp_path / "exp")
    with pytest.raises(StageError, match="no training utterance.*teachers.retune_synthesizer='espeak'"):
        runs.train_teachers(_cfg(), paths, frozenset())


def test_retune_settings_are_checked():
    with pytest.raises(ConfigError, match="needs teachers.retune_synthesizer"):
        load_config("smoke", {"teachers.retune_epochs": "1"})
    with pytest.raises(ConfigError, match="mbrola is not a synthesizer"):
        load_config("smoke", {"teachers.retune_epochs": "1", "teachers.retune_synthesizer": "espeak,mbrola"})
    assert load_config("smoke").teachers.retune_epochs == 0  # off by default


@pytest.mark.parametrize("in_memory", [True, False], ids=["in-memory", "streamed"])
def test_a_datamodule_trains_on_the_utterances_asked_for_and_evaluates_all(tmp_path, in_memory):
    paths = write_tiny_shards(tmp_path / "exp")
    cfg = _cfg(**({} if in_memory else {"train.in_memory_max_frames": "0"}))
    dm = shard_datamodule(paths, cfg.model, cfg.train, utterances=CHOSEN)
    assert isinstance(dm.train_set, InMemoryWindows) == in_memory
    assert dm.train_set.total_frames == 8 * 32
    dm.train_set.set_epoch(0)
    assert sum(len(b["y"]) for b in dm.train_dataloader()) == 8 * 32
    assert sum(len(b["y"]) for b in dm.eval_loader("train")) == 16 * 32
    assert sum(len(b["y"]) for b in dm.eval_loader("dev")) == 4 * 32
    plain = shard_datamodule(paths, cfg.model, cfg.train)
    assert plain.train_set.total_frames == 16 * 32 and plain.eval_train is None


def test_windows_serve_only_the_utterances_asked_for(tmp_path):
    paths = write_tiny_shards(tmp_path / "exp")
    urls = [str(paths.shard_dir("train") / s["file"])
            for s in json.loads(paths.shard_index("train").read_text())["shards"]]
    ds = InMemoryWindows(urls, batch_size=32, shuffle=False, utterances=CHOSEN | {"not-in-the-shards"})
    assert set(ds.table.keys) == CHOSEN and ds.total_frames == 8 * 32
    with pytest.raises(StageError, match="none of the 1 utterances"):
        InMemoryWindows(urls, batch_size=32, utterances=frozenset({"elsewhere"}))


def _corpus(root: Path) -> Path:
    root.mkdir()
    (root / SPEAKERS_NAME).write_text("101  | M | train-synth |  1.00 | espeak-ng en-gb+m1 s160 p50\n"
                                      "102  | F | train-synth |  1.00 | festival ked shift+400\n"
                                      "103  | M | train-synth |  1.00 | flite kal16 stretch1.00 f0own shift+0\n")
    return root


def _utt(uid: str, speaker: str) -> Utterance:
    return Utterance(id=uid, speaker=speaker, chapter="1", audio="", text="A", num_samples=1, sample_rate=16000)


def test_augmented_copies_take_their_sources_synthesizer(tmp_path):
    utts = [_utt("101-1-0", "101"), _utt("sp0.9-101-1-0", "sp0.9-101"), _utt("ps1-102-1-0", "ps1-102"),
            _utt("103-1-0", "103"), _utt("999-1-0", "999")]
    assert utterance_synthesizers(_corpus(tmp_path / "c"), utts) == {
        "101-1-0": "espeak", "sp0.9-101-1-0": "espeak", "ps1-102-1-0": "festival", "103-1-0": "flite"}


def test_the_stage_picks_the_retune_utterances_from_the_corpus(tmp_path):
    paths = RunPaths(tmp_path / "exp")
    rows = [_utt("101-1-0", "101"), _utt("rvb1-101-1-0", "rvb1-101"), _utt("102-1-0", "102"), _utt("103-1-0", "103")]
    paths.manifest("train").parent.mkdir(parents=True)
    paths.manifest("train").write_text("".join(json.dumps(u.__dict__) + "\n" for u in rows))
    cfg = load_config("smoke", {"teachers.retune_epochs": "1", "teachers.retune_synthesizer": "espeak,flite"})
    with pytest.raises(StageError, match="needs a synthetic corpus"):
        teachers_stage.retune_utterances(cfg, paths)  # prepare has not named a synthetic corpus
    write_json(paths.marker("prepare"), {"summary": {"corpus_root": str(_corpus(tmp_path / "c"))}})
    assert teachers_stage.retune_utterances(cfg, paths) == {"101-1-0", "rvb1-101-1-0", "103-1-0"}
    assert teachers_stage.retune_utterances(load_config("smoke"), paths) is None
