"""Augmentation (asr_kd.data.augment): the signal processing, the copies' ids, and the files on disk."""

import numpy as np
import pytest
import soundfile as sf

from asr_kd.data.augment import (
    AugmentSettings,
    add_noise,
    augment_train,
    coloured_noise,
    copy_rng,
    is_copy,
    pitch_shift,
    plan_copies,
    reverberate,
    room_impulse_response,
    speed_perturb,
)
from asr_kd.data.manifest import Utterance

SR = 16000


def _peak_hz(x: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * SR / len(x))


def test_speed_perturbation_scales_duration_and_pitch_like_sox_speed():
    t = np.arange(SR) / SR
    tone = np.sin(2 * np.pi * 200 * t).astype(np.float32)
    for f in (0.9, 1.1):
        y = speed_perturb(tone, f, SR)
        assert abs(len(y) - SR / f) <= 2
        assert _peak_hz(y) == pytest.approx(200 * f, abs=2.0)
    assert np.array_equal(speed_perturb(tone, 1.0, SR), tone)


@pytest.mark.parametrize("cents", [-400, 300])
def test_pitch_shift_moves_the_spectrum_and_keeps_the_duration(cents):
    tone = np.sin(2 * np.pi * 200 * np.arange(2 * SR) / SR).astype(np.float32)
    y = pitch_shift(tone, cents, SR)
    assert len(y) == len(tone)
    assert _peak_hz(y) == pytest.approx(200 * 2 ** (cents / 1200), abs=2.0)


def test_room_response_decays_by_its_rt60_and_keeps_the_direct_path():
    rng = np.random.default_rng(0)
    h = room_impulse_response(rng, SR, rt60=0.4)
    assert h[0] == 1.0 and len(h) == int(0.4 * SR)
    tail = h[int(0.005 * SR):]
    early, late = np.mean(tail[: SR // 20] ** 2), np.mean(tail[-SR // 20:] ** 2)
    assert 10 * np.log10(early / late) > 35  # ~50 dB between the first and the last 50 ms
    x = np.random.default_rng(1).standard_normal(SR).astype(np.float32)
    y = reverberate(x, h)
    assert len(y) == len(x)
    assert np.corrcoef(x, y)[0, 1] > 0.3  # the direct sound is still there, in place
    impulse = np.zeros(8, dtype=np.float32)
    impulse[0] = 1.0
    assert np.allclose(reverberate(x, impulse), x, atol=1e-5)


@pytest.mark.parametrize("exponent", [0.0, 1.0, 2.0])
def test_coloured_noise_has_unit_power_and_its_slope(exponent):
    n = coloured_noise(np.random.default_rng(0), 4 * SR, exponent)
    assert np.mean(n**2) == pytest.approx(1.0, rel=1e-3)
    spec = np.abs(np.fft.rfft(n)) ** 2
    f = np.fft.rfftfreq(len(n), 1 / SR)
    low, high = spec[(f > 100) & (f < 200)].mean(), spec[(f > 3200) & (f < 6400)].mean()
    slope_db = 10 * np.log10(low / high)
    octaves_apart = np.log2(4800 / 150)  # band centres: 5 octaves, 3 dB per octave per unit of exponent
    assert slope_db == pytest.approx(3.01 * exponent * octaves_apart, abs=2.0)


def test_noise_is_added_at_the_requested_snr():
    rng = np.random.default_rng(0)
    x = np.sin(np.arange(SR) / 7.0).astype(np.float32)
    noise = coloured_noise(rng, SR, 1.0)
    y = add_noise(x, noise, 12.0)
    snr = 10 * np.log10(np.mean(x**2) / np.mean((y - x) ** 2))
    assert snr == pytest.approx(12.0, abs=0.01)


def _utt(tmp_path, uid: str, seconds: float, speaker: str = "7") -> Utterance:
    x = 0.3 * np.sin(np.arange(int(seconds * SR)) / 5.0).astype(np.float32)
    path = tmp_path / f"{uid}.flac"
    sf.write(path, x, SR)
    return Utterance(uid, speaker, "70", str(path), "HELLO WORLD", len(x), SR)


def test_copies_get_kaldi_style_ids_and_speakers():
    u = Utterance("7-70-0001", "7", "70", "/a.flac", "HI", 16000, SR)
    plans = plan_copies([u], speeds=(0.9, 1.0, 1.1), reverb_copies=2, pitch_copies=1)
    assert [p.id for p in plans] == ["sp0.9-7-70-0001", "sp1.1-7-70-0001", "ps1-7-70-0001", "rvb1-7-70-0001",
                                     "rvb2-7-70-0001"]
    assert [p.speaker for p in plans] == ["sp0.9-7", "sp1.1-7", "ps1-7", "rvb1-7", "rvb2-7"]
    assert all(is_copy(p.id) for p in plans)
    assert not is_copy("7-70-0001") and not is_copy("spk1-0001") and not is_copy("rvbx-1")
    assert not is_copy("ps7") and not is_copy("psalm-1")


def test_augment_train_writes_seeded_copies_counts_the_short_ones_and_resumes(tmp_path):
    utts = [_utt(tmp_path, "7-70-0000", 1.0), _utt(tmp_path, "7-70-0001", 0.30)]
    s = AugmentSettings(speeds=(0.9, 1.1), reverb_copies=1, rt60_s=(0.2, 0.5), snr_db=(10.0, 20.0), seed=3)
    min_samples = int(0.28 * SR)  # the 0.30 s utterance is too short once sped up by 1.1
    copies, summary = augment_train(utts, tmp_path / "a", s, min_samples=min_samples)
    assert summary["copies"] == len(copies) == 5
    assert summary["skipped"] == {"too_short": 1}
    assert summary["skipped_examples"]["too_short"] == ["sp1.1-7-70-0001"]
    assert summary["copies_by_kind"] == {"rvb1": 2, "sp0.9": 2, "sp1.1": 1}
    for c in copies:
        x, sr = sf.read(c.audio)
        assert sr == SR and len(x) == c.num_samples and c.text == "HELLO WORLD"
    # the same seed gives the same samples in another directory; another seed other noise
    again, _ = augment_train(utts, tmp_path / "b", s, min_samples=min_samples)
    rvb = [c for c in copies if c.id.startswith("rvb1-")][0].audio
    assert np.array_equal(sf.read(rvb)[0], sf.read(rvb.replace("/a/", "/b/"))[0])
    other = AugmentSettings(**{**s.__dict__, "seed": 4})
    augment_train(utts, tmp_path / "c", other, min_samples=min_samples)
    assert not np.array_equal(sf.read(rvb)[0], sf.read(rvb.replace("/a/", "/c/"))[0])
    # a copy already on disk (written atomically, so finished) is kept, not recomputed
    marker = tmp_path / "a" / "sp0.9-7-70-0000.flac"
    before = marker.stat().st_mtime_ns
    augment_train(utts, tmp_path / "a", s, min_samples=min_samples)
    assert marker.stat().st_mtime_ns == before


def test_copy_randomness_depends_on_seed_and_id_only():
    a = copy_rng(0, "rvb1-x").uniform(size=3)
    assert np.array_equal(a, copy_rng(0, "rvb1-x").uniform(size=3))
    assert not np.array_equal(a, copy_rng(0, "rvb1-y").uniform(size=3))


# -- on-the-fly window augmentation (train.freq_warp, train.specaug_*) ------------------------------

def _fbank_of_tone(hz: float) -> "torch.Tensor":
    import torch
    import torchaudio

    t = torch.arange(SR) / SR
    wave = (0.5 * torch.sin(2 * torch.pi * hz * t))[None, :]
    return torchaudio.compliance.kaldi.fbank(wave * 32768, num_mel_bins=40, sample_frequency=SR, dither=0.0)


@pytest.mark.parametrize("alpha", [0.87, 1.15])
def test_frequency_warp_moves_a_tone_as_a_longer_or_shorter_vocal_tract_would(alpha):
    """Warping the fbank of a 1 kHz tone by a puts its peak in the bin the fbank of an a kHz tone has."""
    import torch

    from asr_kd.data.augment import warp_sources

    clean = _fbank_of_tone(1000.0)[:26][None]  # (1, 26, 40)
    src = warp_sources(40, torch.tensor([alpha]))
    lo = src.floor().long()
    frac = src - lo
    warped = clean[..., lo[0]] * (1 - frac[0]) + clean[..., (lo[0] + 1).clamp(max=39)] * frac[0]
    target = _fbank_of_tone(1000.0 * alpha)[:26]
    assert int(warped[0].mean(0).argmax()) == int(target.mean(0).argmax()) != int(clean[0].mean(0).argmax())
    assert torch.allclose(warp_sources(40, torch.tensor([1.0]))[0], torch.arange(40.0), atol=1e-4)


def test_spec_augment_masks_bands_and_frames_within_their_widths_and_repeats_with_the_seed():
    import torch

    from asr_kd.data.augment import spec_augment

    x = torch.randn(64, 26, 40) + 5.0  # no zeros of its own
    kw = dict(freq_masks=1, freq_width=6, time_masks=1, time_width=3)
    y = spec_augment(x, torch.Generator().manual_seed(3), **kw)
    assert y.shape == x.shape and not torch.equal(y, x) and (x != 0).all()  # x is left alone
    zero = y == 0
    bins = zero.all(dim=1)  # (B, 40): bins masked in every frame
    frames = zero.all(dim=2)  # (B, 26): frames masked in every bin
    assert (bins.sum(1) <= 6).all() and (frames.sum(1) <= 3).all() and bins.any() and frames.any()
    # every zero lies in a masked band or frame, and each mask is one run of adjacent bins/frames
    assert torch.equal(zero, bins[:, None, :] | frames[:, :, None])
    for row in bins:
        idx = row.nonzero().flatten()
        assert len(idx) == 0 or int(idx[-1] - idx[0]) == len(idx) - 1
    assert torch.equal(spec_augment(x, torch.Generator().manual_seed(3), **kw), y)
    assert not torch.equal(spec_augment(x, torch.Generator().manual_seed(4), **kw), y)


def test_training_systems_augment_by_seed_step_and_rank_and_not_when_off():
    """The draws are a function of (train.seed, step, rank): a resumed run sees the same windows."""
    import dataclasses

    import torch

    from asr_kd.config import ConfigError, TrainConfig
    from asr_kd.nn.models import AcousticDNN
    from asr_kd.nn.systems import TeacherSystem

    def system(**kw):
        return TeacherSystem(AcousticDNN(26 * 40, hidden_layers=2, hidden_dim=16, num_pdfs=8), TrainConfig(**kw))

    x = torch.randn(8, 26, 40)
    assert system().augmented(x) is x
    on = dict(freq_warp=0.1, specaug_freq_masks=2, specaug_time_masks=1)
    a, b = system(**on), system(**on)
    assert torch.equal(a.augmented(x), b.augmented(x)) and not torch.equal(a.augmented(x), x)
    assert not torch.equal(system(**on, seed=1).augmented(x), a.augmented(x))
    with pytest.raises(ConfigError, match="train.freq_warp"):
        dataclasses.replace(TrainConfig(), freq_warp=0.7)
