"""Training-data augmentation, Kaldi style, made locally (nothing is downloaded).

The prepare stage calls :func:`augment_train` on the training manifest when ``augment.speeds`` or
``augment.reverb_copies`` asks for it. Each augmented utterance is a *copy* with its own id and
speaker, written as a 16-bit FLAC under ``prepare/augment/`` and added to the training manifest, so
the features, the aligner (its GMMs train on the originals, then align every copy: labels follow
the audio) and the DNNs treat it like any other utterance. Dev and test are never augmented.

* **Speed perturbation** (Kaldi's ``perturb_data_dir_speed.sh``, sox ``speed``): for a factor f
  the audio is resampled so it plays f times as fast: tempo and pitch both scale by f, the duration
  by 1/f. The copy of ``103-1240-0000`` at 0.9 is ``sp0.9-103-1240-0000``, spoken by speaker
  ``sp0.9-103`` (a perturbed voice is a new speaker for CMVN, as in Kaldi).
* **Pitch and formant shifts** (sox ``pitch``): copy r (``ps<r>-<id>``, speaker ``ps<r>-<speaker>``)
  has its whole spectrum (pitch and formants: a shorter or longer vocal tract) shifted by a number
  of cents drawn from ``augment.pitch_cents``, its duration unchanged (a phase vocoder stretches,
  then the resampler shifts).
* **Reverberation and noise** (Kaldi's ``reverberate_data_dir.py`` with simulated rooms, MUSAN-like
  noise): copy r of an original (``rvb<r>-<id>``, speaker ``rvb<r>-<speaker>``) is convolved with
  a synthetic room impulse response (a direct path, a few early reflections, an exponentially
  decaying diffuse tail whose RT60 is drawn from ``augment.rt60_s``; the output keeps the input's
  length, aligned to the direct path) and gets coloured noise (white, pink or brown) at an SNR
  drawn from ``augment.snr_db``.

Every random choice is drawn from (``augment.seed``, copy id), so a copy is the same in every run
and on every machine that computes it, independent of which other copies exist.

:func:`spec_augment` is the on-the-fly kind (``train.freq_warp``, ``train.specaug_*``): the
training systems warp and mask each batch of windows before the model sees it (see its section).
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch

from asr_kd.data.manifest import Utterance
from asr_kd.fileio import atomic_path

log = logging.getLogger(__name__)

NOISE_COLOURS = {"white": 0.0, "pink": 1.0, "brown": 2.0}  # power spectrum ~ 1 / f^exponent


@dataclass(frozen=True)
class CopyPlan:
    """One augmented copy to make: the source utterance and how to change it."""

    source: Utterance
    id: str
    speaker: str
    chapter: str
    speed: float = 1.0  # speed factor (1.0 = unchanged)
    pitch: bool = False  # pitch + formant shift, duration kept
    reverb: bool = False  # room response + noise


COPY_KINDS = {"speed": "sp", "pitch": "ps", "reverb": "rvb"}


def copy_prefix(kind: str, value: float | int) -> str:
    """``sp0.9`` / ``sp1.1`` for speed copies, ``ps1`` ... for pitch-shifted, ``rvb1`` ... for reverberated."""
    return f"sp{value:g}" if kind == "speed" else f"{COPY_KINDS[kind]}{int(value)}"


def is_copy(utt_id: str) -> bool:
    """Whether an utterance id names an augmented copy (``sp<f>-``, ``ps<r>-`` or ``rvb<r>-`` prefix)."""
    if "-" not in utt_id:
        return False
    head = utt_id.split("-", 1)[0]
    if head.startswith("sp"):
        try:
            float(head[2:])
            return True
        except ValueError:
            return False
    return any(head.startswith(p) and head[len(p):].isdigit() for p in ("ps", "rvb"))


def plan_copies(utts: Sequence[Utterance], speeds: Sequence[float], reverb_copies: int,
                pitch_copies: int = 0) -> list[CopyPlan]:
    """The copies of each original: one per speed factor other than 1.0, then ``pitch_copies``
    pitch-shifted and ``reverb_copies`` reverberated ones."""
    plans: list[CopyPlan] = []
    for u in utts:
        for f in speeds:
            if f == 1.0:
                continue
            p = copy_prefix("speed", f)
            plans.append(CopyPlan(u, f"{p}-{u.id}", f"{p}-{u.speaker}", f"{p}-{u.chapter}", speed=float(f)))
        for r in range(1, pitch_copies + 1):
            p = copy_prefix("pitch", r)
            plans.append(CopyPlan(u, f"{p}-{u.id}", f"{p}-{u.speaker}", f"{p}-{u.chapter}", pitch=True))
        for r in range(1, reverb_copies + 1):
            p = copy_prefix("reverb", r)
            plans.append(CopyPlan(u, f"{p}-{u.id}", f"{p}-{u.speaker}", f"{p}-{u.chapter}", reverb=True))
    return plans


def copy_rng(seed: int, copy_id: str) -> np.random.Generator:
    """The random generator of one copy: from (seed, id) only."""
    digest = hashlib.sha256(f"augment:{seed}:{copy_id}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


# -- the signal processing ------------------------------------------------------------------------
def speed_perturb(x: np.ndarray, factor: float, sample_rate: int) -> np.ndarray:
    """``x`` played ``factor`` times as fast (tempo and pitch x factor, length / factor), as sox's
    ``speed`` does: the samples are read as if taken at ``factor * sample_rate`` and resampled
    (torchaudio's windowed-sinc resampler) to ``sample_rate``.  (N,) -> (~N / factor,) float32"""
    import torch
    import torchaudio.functional as AF

    if factor <= 0:
        raise ValueError(f"speed factor must be positive, got {factor}")
    if factor == 1.0:
        return x.astype(np.float32)
    src = int(round(sample_rate * factor))
    y = AF.resample(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), orig_freq=src, new_freq=sample_rate)
    return y.numpy()


def pitch_shift(x: np.ndarray, cents: float, sample_rate: int) -> np.ndarray:
    """``x`` with its whole spectrum (pitch and formants) shifted by about ``cents``, duration kept,
    as sox's ``pitch``: a phase vocoder stretches it by the frequency ratio, then the resampler
    plays it that much faster. The ratio is rounded to a 100 Hz step of the sample rate (at most
    ~5 cents off at 16 kHz) so the resampler's kernel stays small.  (N,) -> (N,) float32"""
    import torch
    import torchaudio.functional as AF

    src = int(round(sample_rate * 2 ** (cents / 1200) / 100)) * 100
    if src == sample_rate:
        return x.astype(np.float32)
    ratio = src / sample_rate
    n_fft, hop = 512, 128
    window = torch.hann_window(n_fft)
    wav = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    spec = torch.stft(wav, n_fft, hop, window=window, return_complex=True)  # (F, frames)
    advance = torch.linspace(0, math.pi * hop, spec.shape[-2])[..., None]
    stretched = AF.phase_vocoder(spec, 1.0 / ratio, advance)
    y = torch.istft(stretched, n_fft, hop, window=window, length=int(round(len(x) * ratio)))
    y = AF.resample(y, orig_freq=src, new_freq=sample_rate)
    out = np.zeros(len(x), dtype=np.float32)
    n = min(len(x), y.shape[0])
    out[:n] = y[:n].numpy()
    return out


def room_impulse_response(rng: np.random.Generator, sample_rate: int, rt60: float) -> np.ndarray:
    """A synthetic room impulse response: unit direct path at sample 0, 3-8 early reflections in the
    first 50 ms, and a diffuse tail of decaying noise (60 dB down after ``rt60`` seconds) whose
    high frequencies die faster (air and wall absorption). The direct-to-reverberant energy ratio
    is drawn from -3..+6 dB (a talker near to far from the microphone).  -> (L,) float32"""
    n = max(int(rt60 * sample_rate), sample_rate // 20)
    t = np.arange(n) / sample_rate
    decay = np.exp(-6.908 * t / rt60)  # ln(1000): amplitude -60 dB at rt60
    tail = rng.standard_normal(n) * decay
    # frequency-dependent decay: a one-pole low-pass whose smoothing grows along the tail
    smooth = np.convolve(tail, np.ones(4) / 4, mode="same")
    mix = np.clip(t / rt60, 0.0, 1.0)
    tail = (1 - mix) * tail + mix * smooth
    onset = int(0.003 * sample_rate)  # the diffuse field builds up after the direct sound
    tail[:onset] = 0.0
    for _ in range(int(rng.integers(3, 9))):
        k = int(rng.integers(int(0.002 * sample_rate), int(0.05 * sample_rate)))
        if k < n:
            tail[k] += rng.uniform(0.2, 0.7) * rng.choice([-1.0, 1.0])
    drr_db = rng.uniform(-3.0, 6.0)
    tail *= math.sqrt(1.0 / (10 ** (drr_db / 10)) / max(float(np.sum(tail**2)), 1e-12))
    h = tail
    h[0] = 1.0
    return h.astype(np.float32)


def reverberate(x: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """``x`` convolved with ``rir`` (FFT), cut to ``x``'s length (the direct path stays in place)."""
    import torch
    import torchaudio.functional as AF

    y = AF.fftconvolve(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), torch.from_numpy(rir))
    return y[: len(x)].numpy()


def coloured_noise(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """Unit-power noise whose power spectrum falls as 1 / f^exponent (0 white, 1 pink, 2 brown)."""
    spec = rng.standard_normal(n // 2 + 1) + 1j * rng.standard_normal(n // 2 + 1)
    f = np.arange(n // 2 + 1, dtype=np.float64)
    f[0] = 1.0
    spec *= f ** (-exponent / 2)
    spec[0] = 0.0
    noise = np.fft.irfft(spec, n=n)
    return (noise / max(float(np.sqrt(np.mean(noise**2))), 1e-12)).astype(np.float32)


def add_noise(x: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``x`` plus ``noise`` scaled to ``snr_db`` below ``x``'s mean power."""
    power = float(np.mean(x.astype(np.float64) ** 2))
    scale = math.sqrt(power / 10 ** (snr_db / 10) / max(float(np.mean(noise.astype(np.float64) ** 2)), 1e-20))
    return (x + scale * noise).astype(np.float32)


def limit_peak(x: np.ndarray, peak: float) -> np.ndarray:
    """Scale ``x`` down so its peak is at most ``peak`` (16-bit output must not clip)."""
    m = float(np.abs(x).max()) if len(x) else 0.0
    return x * (peak / m) if m > peak else x


# -- making the copies ----------------------------------------------------------------------------
@dataclass(frozen=True)
class AugmentSettings:
    speeds: tuple[float, ...]
    reverb_copies: int
    rt60_s: tuple[float, float]
    snr_db: tuple[float, float]
    seed: int
    sample_rate: int = 16000
    pitch_copies: int = 0
    pitch_cents: tuple[float, float] = (-500.0, 500.0)


def render_copy(plan: CopyPlan, s: AugmentSettings) -> tuple[np.ndarray, dict[str, Any]]:
    """The samples of one copy, and what was drawn for it (for the log / tests)."""
    x, sr = sf.read(plan.source.audio, dtype="float32", always_2d=True)
    if sr != s.sample_rate:
        raise ValueError(f"{plan.source.audio}: {sr} Hz, expected {s.sample_rate} Hz (prepare checks this)")
    x = x.mean(axis=1)
    drawn: dict[str, Any] = {}
    peak_in = float(np.abs(x).max()) if len(x) else 0.0
    if plan.speed != 1.0:
        x = speed_perturb(x, plan.speed, sr)
        drawn["speed"] = plan.speed
    if plan.pitch:
        cents = float(copy_rng(s.seed, plan.id).uniform(*s.pitch_cents))
        x = pitch_shift(x, cents, sr)
        drawn["pitch_cents"] = round(cents)
    if plan.reverb:
        rng = copy_rng(s.seed, plan.id)
        rt60 = float(rng.uniform(*s.rt60_s))
        x = reverberate(x, room_impulse_response(rng, sr, rt60))
        colour = str(rng.choice(list(NOISE_COLOURS)))
        snr = float(rng.uniform(*s.snr_db))
        x = add_noise(x, coloured_noise(rng, len(x), NOISE_COLOURS[colour]), snr)
        x = limit_peak(x, max(peak_in, 0.1))  # the original level, so copies are not louder
        drawn.update(rt60_s=round(rt60, 3), noise=colour, snr_db=round(snr, 1))
    return limit_peak(x, 32767 / 32768).astype(np.float32), drawn


def _write_copy(args: tuple[CopyPlan, AugmentSettings, str, int]) -> tuple[str, int, str]:
    """Make one copy's FLAC unless it exists (written atomically: existing = finished); returns
    (id, samples, skip reason or "")."""
    plan, s, path, min_samples = args
    out = Path(path)
    if out.exists():
        return plan.id, int(sf.info(str(out)).frames), ""
    x, _ = render_copy(plan, s)
    if len(x) < min_samples:
        return plan.id, len(x), "too_short"
    with atomic_path(out) as tmp:
        sf.write(str(tmp), x, s.sample_rate, format="FLAC", subtype="PCM_16")
    return plan.id, len(x), ""


def augment_train(utts: Sequence[Utterance], out_dir: Path, s: AugmentSettings, *, min_samples: int = 1,
                  jobs: int = 1) -> tuple[list[Utterance], dict[str, Any]]:
    """The augmented copies of ``utts`` (written under ``out_dir``), and the summary the prepare
    stage reports: copies made per kind, hours added, copies skipped (too short after speeding up)
    by reason. Copies already on disk are kept (a killed stage resumes)."""
    from asr_kd.parallel import worker_map
    from asr_kd.progress import progress

    plans = plan_copies(utts, s.speeds, s.reverb_copies, s.pitch_copies)
    out_dir.mkdir(parents=True, exist_ok=True)
    work = [(p, s, str(out_dir / f"{p.id}.flac"), min_samples) for p in plans]
    made: list[Utterance] = []
    per_kind: Counter[str] = Counter()
    skipped: dict[str, list[str]] = {}
    samples_added = 0
    by_id = {p.id: p for p in plans}
    results = worker_map(_write_copy, work, jobs, start="spawn", chunksize=16)
    for copy_id, n, reason in progress(results, total=len(work), desc="augmenting", unit="copy"):
        plan = by_id[copy_id]
        if reason:
            skipped.setdefault(reason, []).append(copy_id)
            continue
        made.append(replace(plan.source, id=plan.id, speaker=plan.speaker, chapter=plan.chapter,
                            audio=str(out_dir / f"{plan.id}.flac"), num_samples=n))
        per_kind[plan.id.split("-", 1)[0]] += 1
        samples_added += n
    summary = {
        "speeds": list(s.speeds), "pitch_copies": s.pitch_copies, "pitch_cents": list(s.pitch_cents),
        "reverb_copies": s.reverb_copies, "rt60_s": list(s.rt60_s),
        "snr_db": list(s.snr_db), "seed": s.seed,
        "originals": len(utts), "copies": len(made), "copies_by_kind": dict(sorted(per_kind.items())),
        "hours_added": round(samples_added / s.sample_rate / 3600, 4),
        "skipped": {r: len(v) for r, v in skipped.items()},
        "skipped_examples": {r: v[:10] for r, v in skipped.items()},
    }
    if skipped:
        log.warning("augment: %s copies skipped (%s)", sum(len(v) for v in skipped.values()),
                    ", ".join(f"{r} {len(v)}" for r, v in skipped.items()))
    return made, summary


# -- on-the-fly augmentation of training windows (train.specaug_*, train.freq_warp) -----------------
# Applied by the training systems (asr_kd.nn.systems) to each batch of normalised fbank windows
# (B, frames, bins) just before the model sees it; the labels and the ensemble's targets are those
# of the clean window. Nothing is written to disk and dev/test are never touched.
#
# * Frequency warping (VTLP, Jaitly & Hinton 2013): every window gets a factor a drawn uniformly
#   from [1 - freq_warp, 1 + freq_warp]; the content the clean window has at f Hz moves to a*f (a
#   longer or shorter vocal tract), by resampling the mel bins along the frequency axis (linear
#   interpolation between bins; the edges are held).
# * SpecAugment's masks (Park et al. 2019) as they apply to a window: ``specaug_freq_masks`` bands
#   of 0 to ``specaug_freq_width`` adjacent mel bins, and ``specaug_time_masks`` runs of 0 to
#   ``specaug_time_width`` frames, set to 0 (the mean, after CMVN).
#
# The draws come from a generator seeded by (seed, step, rank), so a resumed run repeats them.

def _mel(hz: torch.Tensor) -> torch.Tensor:
    return 1127.0 * torch.log1p(hz / 700.0)


def _hz(mel: torch.Tensor) -> torch.Tensor:
    return 700.0 * torch.expm1(mel / 1127.0)


def warp_sources(num_bins: int, alpha: torch.Tensor, *, low_hz: float = 20.0, high_hz: float = 8000.0) -> torch.Tensor:
    """(B, num_bins) fractional source bin per output bin for warp factors ``alpha`` (B,): output bin
    i (centre f_i, Kaldi's mel spacing between ``low_hz`` and ``high_hz``) reads the clean spectrum at
    f_i / alpha."""
    lo, hi = _mel(torch.tensor(low_hz)), _mel(torch.tensor(high_hz))
    step = (hi - lo) / (num_bins + 1)
    centres = _hz(lo + step * torch.arange(1, num_bins + 1, dtype=torch.float32))  # (num_bins,)
    src_mel = _mel(centres[None, :] / alpha[:, None].float())
    return ((src_mel - lo) / step - 1.0).clamp(0.0, num_bins - 1.0)


def spec_augment(x: torch.Tensor, generator: torch.Generator, *, freq_warp: float = 0.0, freq_masks: int = 0,
                 freq_width: int = 0, time_masks: int = 0, time_width: int = 0) -> torch.Tensor:
    """A warped and masked copy of the windows ``x`` (B, frames, bins); ``x`` itself is unchanged.

    The draws are made on the CPU from ``generator`` (so they do not depend on the device)."""
    if x.dim() != 3:
        raise ValueError(f"expected windows (batch, frames, bins), got shape {tuple(x.shape)}")
    b, w, d = x.shape
    out = x
    if freq_warp > 0:
        alpha = 1.0 + (torch.rand(b, generator=generator) * 2.0 - 1.0) * freq_warp
        src = warp_sources(d, alpha)  # (B, d)
        lo = src.floor().long()
        hi = (lo + 1).clamp(max=d - 1)
        frac = src - lo
        # one (d, d) interpolation matrix per window: out[b, t, i] = sum_j x[b, t, j] * m[b, i, j]
        m = torch.zeros(b, d, d)
        m.scatter_add_(2, lo[:, :, None], (1 - frac)[:, :, None])
        m.scatter_add_(2, hi[:, :, None], frac[:, :, None])
        out = torch.bmm(out, m.transpose(1, 2).to(x.device, x.dtype))
    keep = torch.ones(b, w, d, dtype=torch.bool)
    for n, size, width, dim in ((freq_masks, d, freq_width, 2), (time_masks, w, time_width, 1)):
        pos = torch.arange(size)
        for _ in range(n):
            span = torch.randint(0, width + 1, (b,), generator=generator)
            start = (torch.rand(b, generator=generator) * (size - span + 1)).long()
            hit = (pos[None, :] >= start[:, None]) & (pos[None, :] < (start + span)[:, None])  # (B, size)
            keep &= ~(hit[:, None, :] if dim == 2 else hit[:, :, None])
    if freq_masks or time_masks:
        out = out * keep.to(x.device, x.dtype)
    return out if out is not x else x.clone()
