"""Shards: one webdataset sample per utterance, normalised features, labels, index counts, skips."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest

from asr_kd.config import FeatureConfig, RecipeConfig, ShardConfig
from asr_kd.data.features import Stats, apply_cmvn, load_cmvn, write_cmvn
from asr_kd.data.manifest import Utterance, write_manifest
from asr_kd.data.scp import ark_scp_writer, load_scp
from asr_kd.data.shards import iter_utterances, read_index, shard_urls
from asr_kd.fileio import write_json
from asr_kd.paths import SPLITS, RunPaths
from asr_kd.errors import InputError

NUM_PDFS = 17
FRAMES = {"train": [30, 41, 52, 23, 34], "dev": [20, 21], "test": [25]}


def write_shards(paths: RunPaths, feature_cfg: FeatureConfig, shard_cfg: ShardConfig) -> dict:
    """The shards stage on a run directory (the aligner's pdf count from its marker)."""
    from asr_kd.stages.shards import run

    return run(RecipeConfig(features=feature_cfg, shards=shard_cfg), paths)


def build_run(tmp: Path, labels_for: tuple[str, ...] = SPLITS) -> RunPaths:
    """A run dir as the features and align stages leave it (random features, random labels).

    In train, utterance 3 has no alignment and utterance 4 has one label too many.
    """
    paths = RunPaths(tmp / "exp")
    rng = np.random.default_rng(0)
    per_split: dict[str, dict[str, Stats]] = {}
    for split, lengths in FRAMES.items():
        utts = [Utterance(f"{split}{i % 2}-7-{i:04d}", f"{split}{i % 2}", "7", f"/x/{i}.flac", f"WORD {i}", 1, 16000)
                for i in range(len(lengths))]
        write_manifest(paths.manifest(split), utts)
        stats: dict[str, Stats] = {}
        with ark_scp_writer(paths.fbank_scp(split)) as out:
            for u, n in zip(utts, lengths):
                f = (rng.standard_normal((n, 40)) * 3 + 5).astype(np.float32)
                out.write(u.id, f)
                stats.setdefault(u.speaker, Stats.zeros(40)).add(f)
        per_split[split] = stats
        if split in labels_for:
            with ark_scp_writer(paths.pdf_scp(split)) as ali:
                for i, (u, n) in enumerate(zip(utts, lengths)):
                    if split == "train" and i == 3:
                        continue
                    extra = 1 if split == "train" and i == 4 else 0
                    ali.write(u.id, rng.integers(0, NUM_PDFS, size=n + extra).astype(np.int32))
    glob = Stats.zeros(40)
    for s in per_split["train"].values():
        glob.merge(s)
    write_cmvn(paths.cmvn, glob, per_split)
    write_json(paths.marker("align"), {"summary": {"num_pdfs": NUM_PDFS}})
    return paths


def test_shards_hold_normalised_features_labels_and_text(tmp_path: Path) -> None:
    paths = build_run(tmp_path)
    summary = write_shards(paths, FeatureConfig(), ShardConfig(max_utts_per_shard=2))
    assert summary["num_pdfs"] == NUM_PDFS
    index = read_index(paths.shard_index("train"))
    assert index["utterances"] == 3 and index["frames"] == 30 + 41 + 52
    assert [s["file"] for s in index["shards"]] == ["shard-000000.tar", "shard-000001.tar"]
    assert [s["utterances"] for s in index["shards"]] == [2, 1]
    assert index["feature_dim"] == 40 and index["num_pdfs"] == NUM_PDFS and index["has_labels"]
    feats = dict(load_scp(paths.fbank_scp("train")))
    labels = dict(load_scp(paths.pdf_scp("train")))
    stats = load_cmvn(paths.cmvn, "train")
    records = list(iter_utterances(shard_urls(paths.shard_index("train"))))
    assert [r.id for r in records] == ["train0-7-0000", "train0-7-0002", "train1-7-0001"]  # manifest order
    for r in records:
        speaker = r.meta["speaker"]
        expect = apply_cmvn(feats[r.id], speaker, stats, "speaker")
        np.testing.assert_allclose(r.feats, expect, atol=2e-2)  # float16 storage
        assert r.feats.dtype == np.float32 and r.labels is not None and r.labels.dtype == np.int64
        np.testing.assert_array_equal(r.labels, labels[r.id])
        assert r.meta["num_frames"] == r.feats.shape[0] and r.text == f"WORD {int(r.id[-1])}"
    with tarfile.open(shard_urls(paths.shard_index("train"))[0]) as tar:
        names = tar.getnames()
    assert "train0-7-0000.feats.npy" in names and "train0-7-0000.labels.npy" in names


def test_missing_alignment_and_length_mismatch_are_counted_and_named(tmp_path: Path) -> None:
    paths = build_run(tmp_path)
    summary = write_shards(paths, FeatureConfig(), ShardConfig(max_utts_per_shard=10))
    train = summary["splits"]["train"]
    assert train["skipped"] == {"no_features": 0, "no_alignment": 1, "length_mismatch": 1}
    assert train["skipped_utts"]["no_alignment"] == ["train1-7-0003"]
    assert train["skipped_utts"]["length_mismatch"][0].startswith("train0-7-0004 (labels 35, frames 34)")
    assert summary["skipped"]["no_alignment"] == 1


def test_split_without_alignments_gets_no_labels(tmp_path: Path) -> None:
    paths = build_run(tmp_path, labels_for=("train", "dev"))
    write_shards(paths, FeatureConfig(cmvn="global", storage_dtype="float32"), ShardConfig())
    index = read_index(paths.shard_index("test"))
    assert not index["has_labels"] and index["utterances"] == 1
    (rec,) = iter_utterances(shard_urls(paths.shard_index("test")))
    assert rec.labels is None and rec.feats.shape == (25, 40)


def test_rerun_with_larger_shards_removes_stale_ones_and_leaves_no_temp_files(tmp_path: Path) -> None:
    paths = build_run(tmp_path)
    write_shards(paths, FeatureConfig(), ShardConfig(max_utts_per_shard=1))
    assert len(list(paths.shard_dir("train").glob("shard-*.tar"))) == 3
    write_shards(paths, FeatureConfig(), ShardConfig(max_utts_per_shard=100))
    assert sorted(p.name for p in paths.shard_dir("train").iterdir()) == ["index.json", "shard-000000.tar"]


def test_labels_outside_the_pdf_range_are_an_error(tmp_path: Path) -> None:
    paths = build_run(tmp_path)
    write_json(paths.marker("align"), {"summary": {"num_pdfs": 3}})
    with pytest.raises(InputError, match="outside \\[0, 3\\); re-run the align stage"):
        write_shards(paths, FeatureConfig(), ShardConfig())


def test_utterance_ids_with_dots_keep_their_id(tmp_path: Path) -> None:
    from asr_kd.data.shards import ShardWriter, encode_sample

    utt = Utterance("a.b-1", "s", "c", "/x.flac", "HI", 1, 16000)
    out = ShardWriter(tmp_path, 5)
    out.add(encode_sample(utt, np.zeros((3, 40), np.float16), np.arange(3)), 3)
    out.flush()
    (rec,) = iter_utterances([str(tmp_path / "shard-000000.tar")])
    assert rec.id == "a.b-1" and rec.labels is not None and list(rec.labels) == [0, 1, 2]
