"""Compact batches (issue 34): spliced on the device, they are the materialised batches, value for value,
and training on them gives the same losses and weights."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from asr_kd.config import ModelConfig
from asr_kd.data.compact import WindowSplicer, splice_windows
from asr_kd.data.datamodule import shard_datamodule
from asr_kd.data.manifest import Utterance
from asr_kd.data.shards import ShardWriter, encode_sample, iter_shard, sample_key, shard_urls
from asr_kd.data.targets import target_shard, write_target_shard
from asr_kd.data.windows import FrameWindowDataset, InMemoryWindows
from asr_kd.fileio import write_json
from asr_kd.nn.losses import distillation_loss
from asr_kd.nn.models import AcousticDNN
from asr_kd.nn.systems import DistillSystem
from asr_kd.nn.target_sources import StoredTargets
from tests.train_helpers import NUM_PDFS, tiny_train_config, write_tiny_shards

TEMPS, K = 3, 4  # stored temperatures, top k


def write_targets(urls: list[str], out, num_pdfs: int, seed: int = 0) -> list[str]:
    """Random top-k targets shards beside ``urls``: (nT, T, k) int16 ids, float16 probabilities."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    for url in urls:
        samples = []
        for rec in iter_shard(url, float32=False):
            t = rec.feats.shape[0]
            idx = np.stack([np.stack([rng.permutation(num_pdfs)[:K] for _ in range(t)]) for _ in range(TEMPS)])
            prob = rng.dirichlet(np.ones(K + 1), size=(TEMPS, t))[..., :K].astype(np.float16)
            samples.append((sample_key(rec.id), idx.astype(np.int16), prob))
        write_target_shard(target_shard(out, url), samples, {})
    return [str(target_shard(out, u)) for u in urls]


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], list[str]]:
    """10 float16 shards of 3 utterances (4..60 frames; labels = utterance * 1000 + t) and their targets."""
    out = tmp_path_factory.mktemp("compact")
    rng = np.random.default_rng(1)
    writer = ShardWriter(out / "feats", max_utts=3)
    for u in range(30):
        n = int(rng.integers(4, 61))
        feats = rng.standard_normal((n, 40)).astype(np.float16)
        utt = Utterance(f"spk-1-{u:04d}", "spk", "1", "", "", 1, 16000)
        writer.add(encode_sample(utt, feats, np.arange(n) + 1000 * u), n)
    writer.flush()
    write_json(out / "feats" / "index.json", {"shards": writer.shards})
    urls = shard_urls(out / "feats" / "index.json")
    return urls, write_targets(urls, out / "targets", num_pdfs=50)


def spliced(ds, column: int | None = None, num_workers: int = 0) -> list[dict[str, torch.Tensor]]:
    """The compact view's batches, through the splicer (CPU) as the data module's hooks do it."""
    splicer, out = WindowSplicer(), []
    view = ds.compact_view(column)
    for b in DataLoader(view, batch_size=None, num_workers=num_workers):
        batch = dict(zip(view.columns, b))
        assert batch["frames"].dtype == torch.float16  # frames travel in their storage dtype
        out.append(splice_windows(splicer.to_device(batch, torch.device("cpu"))))
    return out


CASES = {
    # streamed, shuffled in blocks of 2 utterances (batches span blocks), padded to equal batches per rank
    "streamed": (FrameWindowDataset, dict(shuffle_buffer_utts=2, equal_batches_per_rank=True, rank=1, world_size=2)),
    "streamed, 2 workers": (FrameWindowDataset, dict(num_workers=2, shuffle_buffer_utts=4)),
    "streamed, frame subset": (FrameWindowDataset, dict(subset_fraction=0.5, subset_unit="frames")),
    "in memory, ids": (InMemoryWindows, dict(return_ids=True)),
    # DDP ranks slicing the one-process batches: only the per-window columns are sliced
    "in memory, ddp": (InMemoryWindows, dict(equal_batches_per_rank=True, rank=1, world_size=2)),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("column", [None, 1])
def test_compact_batches_splice_into_the_same_windows_labels_and_targets(shards, case, column) -> None:
    urls, targets = shards
    cls, kw = CASES[case]
    workers = kw.get("num_workers", 0)
    stored = {} if "ids" in case else dict(target_urls=targets)
    ds = cls(urls, left=20, right=5, batch_size=37, seed=5, shuffle=True, **stored, **kw)
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        old = [dict(zip(ds.columns, b)) for b in DataLoader(ds, batch_size=None, num_workers=workers)]
        new = spliced(ds, column, workers)
        assert len(old) == len(new) == len(ds) > 2
        for a, b in zip(old, new):
            assert list(b) == list(a)  # the same columns, in the same order
            assert b["x"].dtype == torch.float32 and torch.equal(a["x"], b["x"]) and torch.equal(a["y"], b["y"])
            if "ids" in a:
                assert torch.equal(a["ids"], b["ids"])
            if "topk_ids" in a:
                want_ids, want_p = (a["topk_ids"], a["topk_p"]) if column is None else \
                    (a["topk_ids"][:, column], a["topk_p"][:, column])  # only the student's T travels
                assert b["topk_ids"].dtype == torch.int64 and torch.equal(b["topk_ids"], want_ids)
                assert b["topk_p"].dtype == torch.float32 and torch.equal(b["topk_p"], want_p)


def test_the_same_loss_on_a_fixed_batch(shards) -> None:
    urls, targets = shards
    ds = InMemoryWindows(urls, batch_size=64, seed=2, target_urls=targets)
    old, new = dict(zip(ds.columns, next(iter(ds)))), spliced(ds, 2)[0]
    model = AcousticDNN(hidden_layers=2, hidden_dim=32, num_pdfs=50, seed=0)
    source = StoredTargets(2, T=5.0)
    losses = [distillation_loss(model(b["x"]), b["y"] % 50, source.targets(b), 5.0, 0.5) for b in (old, new)]
    assert torch.equal(losses[0], losses[1])


@pytest.mark.parametrize("in_memory", [True, False])
def test_training_on_compact_batches_gives_the_same_student(tmp_path, in_memory) -> None:
    """A student fit (stored targets at one T, frequency warping and masks on) through Lightning on
    compact batches and on materialised ones: the same losses and the same weights."""
    paths = write_tiny_shards(tmp_path / "run")
    targets = write_targets(shard_urls(paths.shard_index("train")), tmp_path / "targets", NUM_PDFS)
    cfg = tiny_train_config(max_epochs=2, batch_size=64, freq_warp=0.1, specaug_freq_masks=1, specaug_freq_width=4,
                            specaug_time_masks=1, specaug_time_width=3,
                            in_memory_max_frames=10**6 if in_memory else 0)
    results = []
    for compact in (False, True):
        dm = shard_datamodule(paths.shard_indexes(), ModelConfig(), cfg, targets_dir=str(tmp_path / "targets"))
        dm.compact_batches = compact
        assert isinstance(dm.train_set, InMemoryWindows) == in_memory and len(targets) > 1
        system = DistillSystem(AcousticDNN(hidden_layers=1, hidden_dim=16, num_pdfs=NUM_PDFS, seed=3),
                               StoredTargets(1, T=2.0), cfg, hard_weight=0.5, max_epochs=2)
        L.seed_everything(0, verbose=False)
        trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=2, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                            use_distributed_sampler=False)
        trainer.fit(system, datamodule=dm)
        assert dm.stored_column == 1
        results.append((system.history, {k: v.clone() for k, v in system.model.state_dict().items()}))
    (h0, w0), (h1, w1) = results
    assert [r["train_loss"] for r in h0] == [r["train_loss"] for r in h1]
    assert [r["dev_frame_acc"] for r in h0] == [r["dev_frame_acc"] for r in h1]
    assert all(torch.equal(w0[k], w1[k]) for k in w0)


def test_the_splicer_keeps_each_block_on_the_device_once(shards) -> None:
    urls, _ = shards
    ds = InMemoryWindows(urls, batch_size=50).compact_view()
    splicer = WindowSplicer()
    held = [splicer.to_device(dict(zip(ds.columns, b)), "cpu")["frames"] for b in ds]
    ds.set_epoch(1)
    held += [splicer.to_device(dict(zip(ds.columns, b)), "cpu")["frames"] for b in ds]
    assert all(h is held[0] for h in held)  # one float32 copy of the split, for every batch of every epoch
    streamed = FrameWindowDataset(urls, batch_size=50, shuffle_buffer_utts=5).compact_view()
    blocks = {id(splicer.to_device(dict(zip(streamed.columns, b)), "cpu")["frames"]) for b in streamed}
    assert 1 < len(blocks) < len(streamed)
