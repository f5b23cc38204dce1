"""A training set of chosen utterances (``shard_datamodule(utterances=...)``): only those are
trained on, and the final train-set evaluation still covers every training utterance."""

from __future__ import annotations

import json

import pytest

from asr_kd.config import load_config
from asr_kd.data.datamodule import shard_datamodule
from asr_kd.data.windows import InMemoryWindows
from asr_kd.runner import StageError
from tests.train_helpers import write_tiny_shards

CHOSEN = frozenset(f"train-{i:03d}" for i in range(8))  # 8 of the 16 training utterances


def _cfg(**kw: str):
    return load_config("smoke", {"model.hidden_layers": "2", "model.hidden_dim": "16", "train.batch_size": "32",
                                 "train.precision": "32-true", "train.accelerator": "cpu", "train.devices": "1", **kw})


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
