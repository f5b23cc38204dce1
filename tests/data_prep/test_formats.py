"""Corpus formats: detection, ``python -m data_prep.convert``, and the prepare stage reading the
smoke corpus as a Kaldi data dir and as lhotse manifests into the LibriSpeech layout's manifest."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asr_kd.config import ConfigError, DataConfig, load_config
from asr_kd.data.manifest import read_manifest
from asr_kd.paths import SPLITS, RunPaths
from asr_kd.stages.prepare import corpus_format, prepare_manifests, split_subsets
from data_prep.formats import detect_format
from data_prep.synthetic import SUBSETS

LIBRI_SPLITS = {split: (subset,) for split, subset in SUBSETS.items()}
SIMPLE = {split: (split,) for split in SPLITS}


def convert(src: Path, out: Path, *args: str) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, "-m", "data_prep.convert", *args, str(src), str(out)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def test_detection_rule(tmp_path: Path, smoke_corpus: Path) -> None:
    assert detect_format(smoke_corpus) == "librispeech"
    (tmp_path / "k" / "train").mkdir(parents=True)
    (tmp_path / "k" / "train" / "wav.scp").write_text("")
    assert detect_format(tmp_path / "k") == "kaldi"
    (tmp_path / "l").mkdir()
    (tmp_path / "l" / "librispeech_supervisions_dev-clean.jsonl.gz").write_bytes(b"")
    assert detect_format(tmp_path / "l") == "lhotse"
    cfg = load_config("smoke", {"data.root": str(tmp_path / "k")})
    assert corpus_format(cfg) == ("kaldi", True)
    assert split_subsets(cfg, "kaldi") == SIMPLE
    forced = load_config("smoke", {"data.root": str(tmp_path / "k"), "data.format": "lhotse",
                                   "data.train_subsets": "train-clean-100"})
    assert corpus_format(forced) == ("lhotse", False)
    assert split_subsets(forced, "lhotse")["train"] == ("train-clean-100",)
    assert corpus_format(load_config("smoke", {})) == ("librispeech", True)  # the synthetic corpus


def test_kaldi_or_lhotse_without_a_data_root_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="data.format=kaldi reads your corpus: pass --data-root"):
        DataConfig(format="kaldi")
    with pytest.raises(ConfigError, match="data.format must be one of"):
        DataConfig(root="/x", format="wav")


@pytest.mark.parametrize("to, args", [("kaldi", ("--pipe",)), ("lhotse", ("--cuts",))])
def test_the_converted_smoke_corpus_gives_the_librispeech_manifest(to, args, smoke_corpus: Path, tmp_path: Path) -> None:
    """Converted (Kaldi: wav.scp pipes, so the audio is decoded and written again; lhotse: a CutSet),
    the smoke corpus reads into the LibriSpeech layout's manifest: the same ids, speakers, texts and
    sample counts, and audio that decodes to the same samples."""
    out = tmp_path / to
    res = convert(smoke_corpus, out, "--to", to, *args)
    assert "train: 200 utterances from train-synth" in res.stdout
    assert detect_format(out) == to and (out / "lm-text.txt").is_file()
    ref = prepare_manifests(smoke_corpus, LIBRI_SPLITS, RunPaths(tmp_path / "ref"), DataConfig())
    got = prepare_manifests(out, SIMPLE, RunPaths(tmp_path / "exp"), DataConfig(), fmt=to)
    assert got["format"] == to and got["skipped_total"] == 0
    written = sum(got["splits"][s]["materialised"] for s in SPLITS)
    assert written == (240 if to == "kaldi" else 0)  # pipes are written once as WAV; lhotse files read in place
    for split in SPLITS:
        a = read_manifest(RunPaths(tmp_path / "ref").manifest(split))
        b = read_manifest(RunPaths(tmp_path / "exp").manifest(split))
        assert [(u.id, u.speaker, u.text, u.num_samples) for u in a] == [(u.id, u.speaker, u.text, u.num_samples)
                                                                         for u in b]
        assert got["splits"][split]["hours"] == ref["splits"][split]["hours"]
        for ua, ub in list(zip(a, b))[:5]:
            assert np.array_equal(sf.read(ua.audio, dtype="int16")[0], sf.read(ub.audio, dtype="int16")[0])


def test_convert_names_a_missing_source(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "data_prep.convert", "--to", "kaldi", str(tmp_path / "nope"),
                          str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert res.returncode == 1 and "nope does not exist" in res.stderr
