"""Issue 15: the smoke corpus in another layout runs through the recipe to the same result.

The session's smoke run (``smoke_run``, LibriSpeech layout) is the reference. The same corpus
converted with ``python -m data_prep.convert`` to Kaldi data dirs (``wav.scp`` pipes) and to
lhotse manifests runs up to the shards, which must hold the same bytes (what every later stage
trains and decodes from), with the same features, GMM and labels on the way. Running the rest of
the recipe once more would cost another smoke run (~3.5 min of CI) and decide nothing the shards
do not: the stages after them are seeded, and their determinism is tested on their own.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.recipes.test_smoke import recipe, show, smoke_args

pytestmark = pytest.mark.slow


def convert_corpus(corpus: Path, out: Path, *args: str) -> Path:
    res = subprocess.run([sys.executable, "-m", "data_prep.convert", *args, str(corpus), str(out)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return out


def test_the_smoke_corpus_as_kaldi_data_dirs_gives_the_same_data(smoke_run, smoke_corpus, tmp_path):
    """Issue 15: the smoke corpus converted to Kaldi data dirs, its wav.scp entries `sox FILE -t
    wav - |` commands (so prepare runs each, and writes its audio once under prepare/audio/), gives
    up to the shards what the LibriSpeech layout gave (see :func:`assert_same_data`).

    This is also the data half of the recipe's determinism test (issue 12): a second run from
    scratch, same seed, same machine, writes byte-identical shards and GMM. The training half is the
    kill-and-resume tests (the same models as the uninterrupted smoke run, to the last bit), the
    decoding half the moved-run test (the same tables when decode runs again)."""
    kaldi = convert_corpus(smoke_corpus, tmp_path / "kaldi", "--to", "kaldi", "--pipe")
    exp = tmp_path / "exp"
    res = recipe(*smoke_args(kaldi, exp), "--stop-stage", "shards", timeout=3600)
    assert res.returncode == 0, res.stderr[-4000:]
    prep = show(kaldi, exp, "prepare")
    assert (prep["format"], prep["format_detected"]) == ("kaldi", True)
    assert [prep["splits"][s]["materialised"] for s in ("train", "dev", "test")] == [200, 20, 20]
    assert all(prep["splits"][s]["resampled"] == 0 for s in ("train", "dev", "test"))
    assert_same_data(smoke_run, exp)


def _shard_members(exp: Path, split: str) -> dict[str, bytes]:
    import tarfile

    out = {}
    for shard in sorted((exp / "shards" / split).glob("*.tar")):
        with tarfile.open(shard) as tar:
            for m in tar.getmembers():
                out[f"{shard.name}/{m.name}"] = tar.extractfile(m).read()
    return out


def test_the_smoke_corpus_as_lhotse_manifests_gives_the_same_features_and_labels(smoke_run, smoke_corpus, tmp_path):
    """Issue 15: the smoke corpus converted to lhotse recordings + supervisions manifests gives,
    up to the shards stage, what the LibriSpeech layout gave: the same utterances, the same fbank
    and MFCC, the same GMM-HMM (final.mdl, tree) and frame labels, and byte-identical shards: the
    teachers' whole input, so the stages after it (seeded) train and decode the same models (the
    Kaldi test above runs them all)."""
    import numpy as np

    lhotse_root = convert_corpus(smoke_corpus, tmp_path / "lhotse", "--to", "lhotse")
    exp = tmp_path / "exp"
    res = recipe(*smoke_args(lhotse_root, exp), "--stop-stage", "shards", timeout=3600)
    assert res.returncode == 0, res.stderr[-4000:]
    assert show(lhotse_root, exp, "prepare")["format"] == "lhotse"
    assert_same_data(smoke_run, exp)


def assert_same_data(smoke_run: Path, exp: Path) -> None:
    """``exp`` holds, up to the shards, what the LibriSpeech-layout smoke run made: the same
    utterances, the same fbank and MFCC, the same GMM-HMM (final.mdl, tree) and frame labels, and
    byte-identical shards: the teachers' whole input, so the seeded stages after it train and
    decode the same models."""
    import numpy as np

    from asr_kd.data.manifest import read_manifest
    from asr_kd.data.scp import load_scp

    for split in ("train", "dev", "test"):
        a = read_manifest(smoke_run / "prepare" / f"manifest-{split}.jsonl")
        b = read_manifest(exp / "prepare" / f"manifest-{split}.jsonl")
        assert [(u.id, u.speaker, u.text, u.num_samples) for u in a] == [(u.id, u.speaker, u.text, u.num_samples)
                                                                         for u in b]
        for table in ("features/{}/fbank.scp", "features/{}/mfcc.scp", "align/{}/pdf.scp"):
            want, got = load_scp(smoke_run / table.format(split)), load_scp(exp / table.format(split))
            assert sorted(got) == sorted(want) and len(want) > 0, table
            assert all(np.array_equal(got[k], want[k]) for k in want), table
        members = _shard_members(exp, split)
        assert members == _shard_members(smoke_run, split) and members
    for name in ("final.mdl", "tree"):
        assert (exp / "align" / name).read_bytes() == (smoke_run / "align" / name).read_bytes()
