"""Frame windows: row 20 is frame t, edge padding, exactly-once splitting, subsets, determinism."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from asr_kd.data.manifest import Utterance
from asr_kd.data.shards import ShardWriter, encode_sample, shard_urls
from asr_kd.data.windows import FrameWindowDataset, InMemoryWindows, utterance_windows
from asr_kd.fileio import write_json

NUM_UTTS = 40


def frame_id(utt: int, t: int) -> int:
    return utt * 1000 + t


@pytest.fixture(scope="module")
def urls(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """8 shards of 5 utterances (5..63 frames). feats[:, 0] = utterance, feats[:, 1] = t;
    label = utterance * 1000 + t, so every frame is identifiable."""
    out = tmp_path_factory.mktemp("shards")
    rng = np.random.default_rng(0)
    writer = ShardWriter(out, max_utts=5)
    for u in range(NUM_UTTS):
        n = int(rng.integers(5, 64))
        feats = rng.standard_normal((n, 40)).astype(np.float32)
        feats[:, 0], feats[:, 1] = u, np.arange(n)
        labels = np.array([frame_id(u, t) for t in range(n)])
        utt = Utterance(f"spk-1-{u:04d}", "spk", "1", "/x.flac", "A B", 1, 16000)
        writer.add(encode_sample(utt, feats, labels), n)
    writer.flush()
    write_json(out / "index.json", {"shards": writer.shards})
    return shard_urls(out / "index.json")


def all_frame_ids(urls: list[str]) -> Counter:
    ds = InMemoryWindows(urls, shuffle=False)
    return Counter(ds.block.labels.tolist())


def collect(ds, num_workers: int = 0) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], int]:
    loader = DataLoader(ds, batch_size=None, num_workers=num_workers)
    return list(loader), len(loader)


def test_frame_t_is_row_20_and_edges_repeat() -> None:
    feats = torch.arange(7 * 3, dtype=torch.float32).view(7, 3)  # (T=7, D=3)
    w = utterance_windows(feats, left=20, right=5)
    assert w.shape == (7, 26, 3)
    for t in range(7):
        assert torch.equal(w[t, 20], feats[t])
        for k in range(26):
            assert torch.equal(w[t, k], feats[min(max(t - 20 + k, 0), 6)])
    assert w.stride(0) == 3, "windows are a strided view of the padded frames, not copies"


def test_batches_have_the_label_of_row_20(urls: list[str]) -> None:
    ds = FrameWindowDataset(urls, batch_size=64, seed=3)
    for x, y in collect(ds)[0]:
        assert x.shape[1:] == (26, 40) and x.dtype == torch.float32 and y.dtype == torch.int64
        centre = x[:, 20]  # (B, 40)
        assert torch.equal(y, (centre[:, 0] * 1000 + centre[:, 1]).long())
        # frame t-20+k, clamped to the utterance: column 1 holds the frame number
        t = centre[:, 1:2]
        expect = torch.clamp(t - 20 + torch.arange(26), min=0)  # (B, 26); the right edge is checked above
        assert torch.all((x[:, :20, 1] == expect[:, :20]))


def test_every_frame_once_per_epoch_over_2_ranks_x_2_workers(urls: list[str]) -> None:
    want = all_frame_ids(urls)
    seen: Counter = Counter()
    for rank in range(2):
        ds = FrameWindowDataset(urls, batch_size=50, shuffle_buffer_utts=3, seed=5, num_workers=2,
                                rank=rank, world_size=2)
        ds.set_epoch(2)
        batches, length = collect(ds, num_workers=2)
        assert len(batches) == length == ds.num_batches
        assert sum(len(y) for _, y in batches) == ds.num_frames
        seen.update(torch.cat([y for _, y in batches]).tolist())
    assert seen == want and max(seen.values()) == 1


def test_rank_from_environment(urls: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    seen: Counter = Counter()
    for rank in range(3):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "3")
        ds = FrameWindowDataset(urls, batch_size=32)
        seen.update(torch.cat([y for _, y in collect(ds)[0]]).tolist())
    assert seen == all_frame_ids(urls)


def test_equal_batches_per_rank_pads_and_counts(urls: list[str]) -> None:
    want = all_frame_ids(urls)
    counts, seen = [], Counter()
    for rank in range(2):
        ds = FrameWindowDataset(urls, batch_size=64, num_workers=2, rank=rank, world_size=2,
                                equal_batches_per_rank=True)
        batches, _ = collect(ds, num_workers=2)
        counts.append(len(batches))
        assert all(len(y) == 64 for _, y in batches)
        plan = ds.epoch_plan()
        assert sum(plan.padded) == 4 * plan.batches[0] * 64 - sum(want.values())
        seen.update(torch.cat([y for _, y in batches]).tolist())
    assert counts[0] == counts[1]
    assert set(seen) == set(want)  # every frame served; the extra windows are repeats
    assert sum(seen.values()) - sum(want.values()) == sum(plan.padded)


def test_equal_batches_with_drop_last_counts_dropped(urls: list[str]) -> None:
    served, dropped, counts = 0, 0, []
    for rank in range(2):
        ds = FrameWindowDataset(urls, batch_size=64, rank=rank, world_size=2, equal_batches_per_rank=True,
                                drop_last=True)
        batches, _ = collect(ds)
        counts.append(len(batches))
        served += sum(len(y) for _, y in batches)
        dropped = sum(ds.epoch_plan().dropped)
    assert counts[0] == counts[1] and served + dropped == sum(all_frame_ids(urls).values())


def test_subset_fraction_is_the_same_on_every_rank_and_epoch(urls: list[str]) -> None:
    def utts_served(rank: int, epoch: int, subset_seed: int) -> set[int]:
        ds = FrameWindowDataset(urls, batch_size=16, subset_fraction=0.25, subset_seed=subset_seed,
                                rank=rank, world_size=2)
        ds.set_epoch(epoch)
        return {v // 1000 for _, y in collect(ds)[0] for v in y.tolist()}

    both = utts_served(0, 0, 7) | utts_served(1, 0, 7)
    assert len(both) == 10  # 25% of 40 utterances
    assert not utts_served(0, 0, 7) & utts_served(1, 0, 7)
    assert utts_served(0, 3, 7) | utts_served(1, 3, 7) == both
    assert utts_served(0, 0, 8) | utts_served(1, 0, 8) != both
    ds = FrameWindowDataset(urls, subset_fraction=0.25, subset_seed=7)
    assert ds.total_frames == sum(c for f, c in all_frame_ids(urls).items() if f // 1000 in both)


def test_deterministic_for_a_seed_and_reshuffled_per_epoch(urls: list[str]) -> None:
    def run(seed: int, epoch: int) -> list[int]:
        ds = FrameWindowDataset(urls, batch_size=32, shuffle_buffer_utts=4, seed=seed)
        ds.set_epoch(epoch)
        return torch.cat([y for _, y in collect(ds)[0]]).tolist()

    a = run(1, 0)
    assert a == run(1, 0)
    assert a != run(1, 1) and sorted(a) == sorted(run(1, 1))
    assert a != run(2, 0)


def test_in_memory_serves_the_same_batches(urls: list[str]) -> None:
    stream = FrameWindowDataset(urls, batch_size=100, shuffle=False)
    memory = InMemoryWindows(urls, batch_size=100, shuffle=False)
    a, b = collect(stream)[0], list(memory)
    assert len(a) == len(b) == len(memory)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    shuffled = InMemoryWindows(urls, batch_size=100, seed=4, rank=1, world_size=2)
    other = InMemoryWindows(urls, batch_size=100, seed=4, rank=0, world_size=2)
    ids = [v for _, y in list(shuffled) + list(other) for v in y.tolist()]
    assert Counter(ids) == all_frame_ids(urls)


def test_ddp_ranks_training_in_memory_slice_the_one_process_batches(urls: list[str]) -> None:
    """2 ranks x batch 48 read, per step, exactly the 96 windows (ids too) one process with batch 96
    reads: DDP's averaged gradient is the one-process gradient (the torchrun recipe test needs it)."""
    kw = dict(seed=3, shuffle=True, equal_batches_per_rank=True, return_ids=True, subset_fraction=0.5, subset_seed=2)
    one = InMemoryWindows(urls, batch_size=96, rank=0, world_size=1, **kw)
    ranks = [InMemoryWindows(urls, batch_size=48, rank=r, world_size=2, **kw) for r in range(2)]
    for epoch in (0, 1):
        for ds in (one, *ranks):
            ds.set_epoch(epoch)
        steps = list(one)
        assert all(r.shares_global_batches for r in ranks) and not one.shares_global_batches
        assert len(ranks[0]) == len(ranks[1]) == len(one) == len(steps)
        for step, (a, b) in zip(steps, zip(*ranks)):
            assert len(a[1]) == len(b[1]) == 48
            for column, (sa, sb) in zip(step, zip(a, b)):
                assert torch.equal(column, torch.cat([sa, sb]))
        assert ranks[0].num_frames + ranks[1].num_frames == one.num_frames
    evaluation = InMemoryWindows(urls, batch_size=48, rank=0, world_size=2, shuffle=False)
    assert not evaluation.shares_global_batches  # dev/test stay split by utterances


def test_worker_count_must_match_the_loader(urls: list[str]) -> None:
    ds = FrameWindowDataset(urls, num_workers=0)
    with pytest.raises(ValueError, match="pass the same num_workers"):
        collect(ds, num_workers=2)


def test_more_parts_than_utterances(urls: list[str]) -> None:
    tiny = dict(subset_fraction=3 / NUM_UTTS, subset_seed=1, batch_size=8)
    seen: Counter = Counter()
    for rank in range(4):
        ds = FrameWindowDataset(urls, rank=rank, world_size=4, **tiny)
        seen.update(torch.cat([y for _, y in collect(ds)[0]] or [torch.zeros(0)]).tolist())
        mem = InMemoryWindows(urls, rank=rank, world_size=4, **tiny)
        assert sum(len(y) for _, y in mem) == mem.num_frames
    assert len({v // 1000 for v in seen}) == 3 and max(seen.values()) == 1
    with pytest.raises(ValueError, match="cannot fill 4 ranks x workers"):
        len(FrameWindowDataset(urls, rank=0, world_size=4, equal_batches_per_rank=True, **tiny))


def test_frame_subset_spans_every_utterance_and_is_fixed(urls: list[str]) -> None:
    """subset_unit="frames": a fraction of the windows of (nearly) every utterance, the same
    windows streamed over 2 ranks x 2 workers, in memory, and in every epoch."""
    kw = dict(subset_fraction=0.25, subset_seed=3, subset_unit="frames", batch_size=16)
    mem = InMemoryWindows(urls, shuffle=True, **kw)
    chosen = Counter(mem.block.labels.tolist())
    full = all_frame_ids(urls)
    assert max(chosen.values()) == 1 and set(chosen) <= set(full)
    assert 0.18 < len(chosen) / len(full) < 0.32
    assert len({i // 1000 for i in chosen}) >= NUM_UTTS - 2  # spread over the utterances
    assert mem.total_frames == len(chosen)
    for epoch in (0, 1):
        streamed = Counter()
        for rank in range(2):
            ds = FrameWindowDataset(urls, rank=rank, world_size=2, num_workers=2, shuffle=True, **kw)
            ds.set_epoch(epoch)
            for _, y in collect(ds, num_workers=2)[0]:
                streamed.update(y.tolist())
        assert streamed == chosen
    again = InMemoryWindows(urls, shuffle=False, **kw)
    assert Counter(again.block.labels.tolist()) == chosen
    other = InMemoryWindows(urls, shuffle=False, **{**kw, "subset_seed": 4})
    assert Counter(other.block.labels.tolist()) != chosen


def test_columns_name_the_batches_the_data_module_serves_as_dicts(urls: list[str]) -> None:
    from torch.utils.data import TensorDataset

    from asr_kd.data.datamodule import FrameDataModule
    from asr_kd.data.windows import named_batch

    mem = InMemoryWindows(urls, batch_size=16, shuffle=False, return_ids=True)
    assert mem.columns == ("x", "y", "ids")
    assert FrameWindowDataset(urls, batch_size=16).columns == ("x", "y")
    assert FrameWindowDataset(urls, batch_size=16, target_urls=urls).columns == ("x", "y", "topk_ids", "topk_p")
    plain = TensorDataset(torch.randn(20, 26, 40), torch.arange(20))
    dm = FrameDataModule(mem, FrameWindowDataset(urls, batch_size=16, shuffle=False), plain, batch_size=8)
    compact = next(iter(dm.train_dataloader()))  # Lightning's loaders: compact, spliced on the device
    assert set(compact) == {"frames", "block", "start", "y", "ids"}
    first = dm.on_after_batch_transfer(dm.transfer_batch_to_device(compact, torch.device("cpu"), 0), 0)
    x, y, ids = next(iter(mem))
    assert set(first) == {"x", "y", "ids"} and torch.equal(first["x"], x) and torch.equal(first["ids"], ids)
    assert set(next(iter(dm.eval_loader("dev")))) == {"x", "y"}
    test = next(iter(dm.eval_loader("test")))  # map-style: collated, then named
    assert set(test) == {"x", "y"} and test["x"].shape == (8, 26, 40) and torch.equal(test["y"], torch.arange(8))
    with pytest.raises(ValueError, match="a batch of 2 tensors"):
        named_batch(("x", "y", "ids"), (x, y))
