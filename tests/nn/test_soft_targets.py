"""Stored sparse soft targets (distill.targets=stored): the top-k + tail form and its loss, the
targets shards' alignment with the feature shards, resume per shard and staleness."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from asr_kd.data.manifest import Utterance
from asr_kd.data.shards import ShardWriter, encode_sample, shard_urls
from asr_kd.data.targets import iter_target_shard, target_shard
from asr_kd.data.windows import FrameWindowDataset, InMemoryWindows
from asr_kd.fileio import write_json
from asr_kd.nn.ensemble import Ensemble, ensemble_probs
from asr_kd.nn.losses import soft_cross_entropy, sparse_soft_cross_entropy
from asr_kd.nn.models import StackedDNN
from asr_kd.nn.soft_targets import kl_to_dense, topk_targets, write_soft_targets
from asr_kd.errors import InputError

N = 37  # states
TEMPS = [1.0, 2.0]


def _probs(b: int = 8, n: int = N, T: float = 2.0, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    z_teacher = torch.randn(b, n, generator=g) * 3
    return F.softmax(z_teacher / T, dim=-1), torch.randn(b, n, generator=g, requires_grad=True)


def test_sparse_loss_with_k_equal_n_is_the_dense_loss():
    p, z = _probs()
    q, idx = torch.topk(p, N, dim=-1)
    sparse = sparse_soft_cross_entropy(z, idx, q, T=2.0)
    dense = soft_cross_entropy(z, p, T=2.0)
    assert sparse.item() == pytest.approx(dense.item(), rel=1e-5)
    sparse.backward()
    assert torch.isfinite(z.grad).all()


def test_sparse_loss_is_the_cross_entropy_with_the_tail_merged_into_one_class():
    p, z = _probs()
    k, T = 5, 2.0
    q, idx = torch.topk(p, k, dim=-1)
    s = F.softmax(z.detach() / T, dim=-1)
    s_top = s.gather(-1, idx)
    q_tail, s_tail = 1 - q.sum(-1), 1 - s_top.sum(-1)
    want = -((q * s_top.log()).sum(-1) + q_tail * s_tail.log()).mean()
    assert sparse_soft_cross_entropy(z, idx, q, T).item() == pytest.approx(want.item(), rel=1e-5)
    assert (q_tail > 0.01).all()  # the tail carries mass here: the test exercises it


@pytest.mark.parametrize("log_tail", [-3.0, -25.0, -60.0])
def test_sparse_loss_reads_the_students_tail_exactly_even_when_it_is_tiny(log_tail):
    """The tail's log mass is exact down to tiny tails (the masking of the top k adds < 1e-33)."""
    k, n = 4, 50
    z = torch.zeros(1, n, dtype=torch.float64)
    z[0, k:] = log_tail - np.log(n - k)  # the other states hold e^log_tail of the (unnormalised) mass
    z[0, :k] = np.log((1 - np.exp(log_tail)) / k)  # the top k the rest, evenly
    idx = torch.arange(k)[None]
    q = torch.full((1, k), 0.2)  # the target puts 0.2 outside its top k
    loss = sparse_soft_cross_entropy(z.float(), idx, q, T=1.0)
    want = -(0.8 * np.log((1 - np.exp(log_tail)) / k) + 0.2 * log_tail)
    assert loss.item() == pytest.approx(want, rel=1e-4)


def test_topk_form_and_its_kl_to_dense():
    p, _ = _probs(b=64, T=5.0)
    kls = []
    for k in (2, 8, 32, N):
        idx, q = topk_targets(p, k)
        assert idx.shape == q.shape == (64, k) and q.dtype == torch.float16
        assert torch.equal(p.gather(-1, idx).argmax(-1), torch.zeros(64, dtype=torch.long))  # sorted, largest first
        kl = kl_to_dense(p, idx, q)
        assert (kl > -1e-3).all()  # float16 rounding of q only
        kls.append(kl.mean().item())
    assert kls == sorted(kls, reverse=True)  # more states kept, closer to dense
    assert kls[-1] < 1e-5  # k = N: only float16 rounding
    # the tail spread evenly: for k = N - 1 the reconstruction is exact up to rounding
    idx, q = topk_targets(p, N - 1)
    assert kl_to_dense(p, idx, q).mean().item() < 1e-4


# ---------------------------------------------------------------------------------------------
# The targets shards
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """4 shards of 3 utterances (4..30 frames), 10-dim features."""
    out = tmp_path_factory.mktemp("shards")
    rng = np.random.default_rng(1)
    writer = ShardWriter(out, max_utts=3)
    for u in range(12):
        n = int(rng.integers(4, 31))
        feats = rng.standard_normal((n, 10)).astype(np.float32)
        utt = Utterance(f"spk-1-{u:04d}", "spk", "1", "/x.flac", "A B", 1, 16000)
        writer.add(encode_sample(utt, feats, rng.integers(0, N, n)), n)
    writer.flush()
    write_json(out / "index.json", {"shards": writer.shards})
    return shard_urls(out / "index.json")


@pytest.fixture(scope="module")
def ens() -> Ensemble:
    return Ensemble(StackedDNN([1, 2, 3], input_dim=4 * 10, hidden_layers=1, hidden_dim=16, num_pdfs=N))


def _write(ens, shards, out, key="a", k=4, **kw):
    return write_soft_targets(ens, shards, out, key=key, temperatures=TEMPS, k=k, left=2, right=1,
                              device=torch.device("cpu"), precision="32-true", batch_frames=20, **kw)


def _check_batches(ens: Ensemble, batches, k: int) -> int:
    """Every window's targets are the ensemble's top k of its own centre frame's window."""
    frames = 0
    for x, _, idx, q in batches:
        assert idx.shape == q.shape == (x.shape[0], len(TEMPS), k)
        logits = ens(x)
        for c, T in enumerate(TEMPS):
            want_idx, want_q = topk_targets(ensemble_probs(logits, T), k)
            assert torch.equal(idx[:, c], want_idx)
            assert torch.allclose(q[:, c], want_q.float(), atol=1e-3)
        frames += x.shape[0]
    return frames


def test_targets_shards_align_with_the_feature_shards(shards, ens, tmp_path):
    index = _write(ens, shards, tmp_path)
    total = sum(len(idx[0]) for u in shards for _, idx, _ in iter_target_shard(target_shard(tmp_path, u)))
    assert index["frames"] == total and index["shards"] == 4 and index["k"] == 4
    assert index["payload_bytes_per_frame"] == len(TEMPS) * 4 * (2 + 2)  # int16 ids + float16 probs
    assert set(index["kl_to_dense"]) == {"1", "2"} and all(v > 0 for v in index["kl_to_dense"].values())
    assert (tmp_path / "index.json").exists()
    targets = [str(target_shard(tmp_path, u)) for u in shards]
    # streamed, shuffled, 2 workers; in memory; a frame subset: the targets follow their windows
    ds = FrameWindowDataset(shards, left=2, right=1, batch_size=7, num_workers=2, target_urls=targets)
    assert _check_batches(ens, DataLoader(ds, batch_size=None, num_workers=2), 4) == total
    mem = InMemoryWindows(shards, left=2, right=1, batch_size=7, target_urls=targets)
    assert _check_batches(ens, mem, 4) == total
    sub = InMemoryWindows(shards, left=2, right=1, batch_size=5, subset_fraction=0.3, subset_unit="frames",
                          target_urls=targets)
    assert 0 < _check_batches(ens, sub, 4) < total
    # two ranks: each reads its own part, with the targets
    parts = [FrameWindowDataset(shards, left=2, right=1, batch_size=7, rank=r, world_size=2, target_urls=targets)
             for r in range(2)]
    assert sum(_check_batches(ens, p, 4) for p in parts) == total


def test_targets_resume_per_shard_and_are_rewritten_when_stale(shards, ens, tmp_path):
    _write(ens, shards, tmp_path)
    victim = target_shard(tmp_path, shards[2])
    victim.unlink()  # a pass killed before writing shard 2
    mtimes = {u: target_shard(tmp_path, u).stat().st_mtime_ns for u in shards if u != shards[2]}
    index = _write(ens, shards, tmp_path)
    assert (index["shards_written"], index["shards_kept"]) == (1, 3) and victim.exists()
    assert all(target_shard(tmp_path, u).stat().st_mtime_ns == t for u, t in mtimes.items())
    index = _write(ens, shards, tmp_path, key="b", k=3)  # new teachers, shards or form: a new key
    assert (index["shards_written"], index["shards_kept"]) == (4, 0) and index["k"] == 3
    targets = [str(target_shard(tmp_path, u)) for u in shards]
    assert _check_batches(ens, InMemoryWindows(shards, left=2, right=1, target_urls=targets), 3) == index["frames"]


def test_each_rank_writes_its_own_shards_and_waits_for_the_others(shards, ens, tmp_path):
    with pytest.raises(InputError, match="not written by the other ranks"):
        _write(ens, shards, tmp_path, rank=1, world=2, wait_s=0.2)
    assert [target_shard(tmp_path, u).exists() for u in shards] == [False, True, False, True]
    index = _write(ens, shards, tmp_path, rank=0, world=2, wait_s=5)
    assert (index["shards_written"], index["shards_kept"]) == (2, 0)


def test_targets_of_other_shards_are_refused(shards, ens, tmp_path):
    _write(ens, shards, tmp_path)
    swapped = [str(target_shard(tmp_path, u)) for u in reversed(shards)]
    with pytest.raises(InputError, match="do not match the training shards"):
        list(InMemoryWindows(shards, left=2, right=1, target_urls=swapped))


def test_the_targets_key_changes_with_teachers_shards_and_form(tmp_path):
    from asr_kd.nn.soft_targets import targets_key

    teachers = [tmp_path / "t0.pt", tmp_path / "t1.pt"]
    for i, t in enumerate(teachers):
        t.write_bytes(bytes([i]) * 100)
    index = {"frames": 10, "shards": [{"file": "shard-000000.tar", "utts": [["a", 10]]}]}

    def key(**kw):
        args = dict(k=16, temperatures=[1.0, 2.0], mean="arithmetic", left=20, right=5, precision="auto") | kw
        return targets_key(teachers, kw.pop("index", index), **{a: v for a, v in args.items() if a != "index"})

    base = key()
    assert key() == base
    assert key(k=8) != base and key(temperatures=[2.0]) != base and key(mean="geometric") != base
    assert key(index={**index, "frames": 11}) != base  # new training shards
    teachers[1].write_bytes(b"retrained")  # a teacher retrained: same file name, new content
    assert key() != base
