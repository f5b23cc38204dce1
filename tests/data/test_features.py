"""Features: Kaldi framing, agreement with kaldi-native-fbank, the stage's ark/scp, CMVN, bad audio."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import kaldi_native_fbank as knf  # test-only dependency (pyproject extra 'test')
import numpy as np
import pytest
import soundfile as sf

from asr_kd.config import FeatureConfig
from asr_kd.data.features import (
    AudioError,
    apply_cmvn,
    compute_features as _compute_features,
    fbank,
    load_cmvn,
    mfcc,
    num_frames,
    read_audio,
)
from asr_kd.data.manifest import Utterance, write_manifest
from asr_kd.data.scp import load_scp
from asr_kd.paths import SPLITS, RunPaths
from asr_kd.errors import InputError


def compute_features(paths: RunPaths, cfg: FeatureConfig, splits=SPLITS) -> dict:
    """The features stage's work on a run directory's splits, as the stage calls it."""
    return _compute_features({s: paths.manifest(s) for s in splits}, {s: paths.fbank_scp(s) for s in splits},
                             {s: paths.mfcc_scp(s) for s in splits}, paths.cmvn, cfg)


SR = 16000
CFG = FeatureConfig(num_workers=1)


def tone(seconds: float, freq: float, seed: int) -> np.ndarray:
    """A tone in a little noise, float32 in [-1, 1)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    x = 0.3 * np.sin(2 * np.pi * freq * t) + 0.02 * rng.standard_normal(t.shape)
    return x.astype(np.float32)


def make_corpus(tmp: Path, bad: bool = False) -> RunPaths:
    """A run dir with manifests: train has 2 speakers x 2 utterances; dev and test 1 each."""
    paths = RunPaths(tmp / "exp")
    plan = {"train": [("11", 0), ("11", 1), ("22", 0), ("22", 1)], "dev": [("33", 0)], "test": [("44", 0)]}
    for split, utts in plan.items():
        rows = []
        for spk, i in utts:
            uid = f"{spk}-1-{i:04d}"
            audio = tmp / "audio" / f"{uid}.flac"
            audio.parent.mkdir(parents=True, exist_ok=True)
            x = tone(0.4 + 0.13 * i, 150.0 * int(spk[0]) + 40 * i, seed=int(spk) + i)
            sf.write(audio, x, SR)
            rows.append(Utterance(uid, spk, "1", str(audio), "HELLO WORLD", len(x), SR))
        if bad and split == "train":
            corrupt = tmp / "audio" / "11-1-0009.flac"
            corrupt.write_bytes(b"this is not a flac file")
            rows.append(Utterance("11-1-0009", "11", "1", str(corrupt), "HELLO", 8000, SR))
            slow = tmp / "audio" / "22-1-0009.flac"
            sf.write(slow, tone(0.5, 300, 3)[:4000], 8000)
            rows.append(Utterance("22-1-0009", "22", "1", str(slow), "WORLD", 4000, SR))
        write_manifest(paths.manifest(split), rows)
    return paths


@pytest.mark.parametrize("n", [400, 401, 559, 560, 561, 16000, 20123])
def test_frame_count_follows_kaldi_framing(n: int) -> None:
    expected = 1 + (n - 400) // 160  # snip_edges: only whole 25 ms windows, 10 ms apart
    assert num_frames(n, SR, CFG) == expected
    assert fbank(tone(n / SR, 300, 0)[:n], SR, CFG).shape == (expected, 40)
    assert mfcc(tone(n / SR, 300, 0)[:n], SR, CFG).shape == (expected, 13)


def test_shorter_than_a_window_has_no_frames() -> None:
    assert num_frames(399, SR, CFG) == 0


def _knf_frames(online, x: np.ndarray) -> np.ndarray:
    online.accept_waveform(SR, (x * 32768.0).tolist())
    online.input_finished()
    return np.stack([online.get_frame(i) for i in range(online.num_frames_ready)])


def test_fbank_matches_kaldi_native_fbank() -> None:
    x = tone(1.2345, 440, 1)
    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0.0
    opts.frame_opts.snip_edges = True
    opts.mel_opts.num_bins = 40
    ref = _knf_frames(knf.OnlineFbank(opts), x)
    ours = fbank(x, SR, CFG)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, atol=2e-3)


def test_mfcc_matches_kaldi_native_fbank() -> None:
    x = tone(0.987, 220, 2)
    opts = knf.MfccOptions()
    opts.frame_opts.dither = 0.0
    opts.mel_opts.num_bins = 23
    opts.num_ceps = 13
    opts.use_energy = False
    ref = _knf_frames(knf.OnlineMfcc(opts), x)
    ours = mfcc(x, SR, CFG)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, atol=5e-3, rtol=1e-4)


def test_stage_writes_ark_scp_pointing_at_final_names(tmp_path: Path) -> None:
    paths = make_corpus(tmp_path)
    summary = compute_features(paths, CFG)
    assert summary["failed"] == 0
    for split in SPLITS:
        scp = paths.fbank_scp(split)
        arks = {line.split()[1].rsplit(":", 1)[0] for line in scp.read_text().splitlines()}
        assert arks == {scp.with_suffix(".ark").name}  # relative to the scp: the run dir can move
        assert not [p for p in scp.parent.iterdir() if p.name.startswith(".")], "temp files left behind"
    feats = dict(load_scp(paths.fbank_scp("train")))
    mf = dict(load_scp(paths.mfcc_scp("train")))
    assert sorted(feats) == ["11-1-0000", "11-1-0001", "22-1-0000", "22-1-0001"]
    audio = tmp_path / "audio" / "22-1-0001.flac"
    np.testing.assert_array_equal(feats["22-1-0001"], fbank(read_audio(audio, SR), SR, CFG))
    assert mf["22-1-0001"].shape == (feats["22-1-0001"].shape[0], 13)
    total = sum(f.shape[0] for f in feats.values())
    assert summary["splits"]["train"]["frames"] == total


def test_speaker_cmvn_gives_zero_mean_unit_variance(tmp_path: Path) -> None:
    paths = make_corpus(tmp_path)
    compute_features(paths, CFG)
    feats = dict(load_scp(paths.fbank_scp("train")))
    stats = load_cmvn(paths.cmvn, "train")
    for spk in ("11", "22"):
        normed = np.concatenate([apply_cmvn(f, spk, stats, "speaker") for k, f in feats.items()
                                 if k.startswith(spk)])  # (T_spk, 40)
        np.testing.assert_allclose(normed.mean(axis=0), 0.0, atol=1e-4)
        np.testing.assert_allclose(normed.std(axis=0), 1.0, atol=1e-3)
    glob = np.concatenate([apply_cmvn(f, "ignored", stats, "global") for f in feats.values()])
    np.testing.assert_allclose(glob.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(glob.std(axis=0), 1.0, atol=1e-3)
    f = next(iter(feats.values()))
    np.testing.assert_array_equal(apply_cmvn(f, "11", stats, "none"), f)


def test_dev_speakers_use_their_own_stats_and_global_comes_from_train(tmp_path: Path) -> None:
    paths = make_corpus(tmp_path)
    compute_features(paths, CFG)
    dev = dict(load_scp(paths.fbank_scp("dev")))["33-1-0000"]
    dev_stats = load_cmvn(paths.cmvn, "dev")
    assert set(dev_stats.speakers) == {"33"}
    np.testing.assert_allclose(apply_cmvn(dev, "33", dev_stats, "speaker").mean(axis=0), 0.0, atol=1e-4)
    train = dict(load_scp(paths.fbank_scp("train")))
    assert dev_stats.global_stats.count == sum(f.shape[0] for f in train.values())
    with pytest.raises(InputError, match="speaker '11'"):
        apply_cmvn(dev, "11", dev_stats, "speaker")


def test_bad_audio_is_named_and_counted(tmp_path: Path) -> None:
    paths = make_corpus(tmp_path, bad=True)
    summary = compute_features(paths, CFG)
    train = summary["splits"]["train"]
    assert train["failed"] == 2 and train["utterances"] == 4
    errors = {f["id"]: f["error"] for f in train["failures"]}
    assert "11-1-0009.flac" in errors["11-1-0009"] and "cannot read audio" in errors["11-1-0009"]
    assert "22-1-0009.flac" in errors["22-1-0009"] and "8000 Hz" in errors["22-1-0009"]
    assert "11-1-0009" not in dict(load_scp(paths.fbank_scp("train")))
    assert train["lost"]["counts"] == {"unreadable_audio": 1, "wrong_sample_rate": 1}  # for the report's account
    assert train["lost"]["examples"]["unreadable_audio"] == [errors["11-1-0009"]]


def test_read_audio_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.flac"
    with pytest.raises(AudioError, match="nope.flac"):
        read_audio(missing, SR)
    wav = tmp_path / "eight.wav"
    sf.write(wav, tone(0.1, 100, 0), 8000)
    with pytest.raises(AudioError, match="eight.wav: sample rate 8000 Hz, expected 16000"):
        read_audio(wav, SR)


def test_worker_processes_give_identical_features(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import asr_kd.data.features

    monkeypatch.setattr(asr_kd.data.features, "POOL_MIN_AUDIO_S", 0.0)  # use the pool even for tiny audio
    paths = make_corpus(tmp_path)
    compute_features(paths, CFG, splits=("train",))
    one = dict(load_scp(paths.fbank_scp("train")))
    one = {k: v.copy() for k, v in one.items()}
    compute_features(paths, dataclasses.replace(CFG, num_workers=2), splits=("train",))
    two = dict(load_scp(paths.fbank_scp("train")))
    assert sorted(one) == sorted(two)
    for k in one:
        np.testing.assert_array_equal(one[k], two[k])
