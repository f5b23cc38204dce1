"""Audio that the features stage cannot read as it is, made into one plain WAV file per utterance.

The features stage reads each utterance's audio by file name (soundfile), whole, at the recipe's
sample rate. A LibriSpeech file is such a file. Kaldi and lhotse corpora also name audio that is
not: a ``wav.scp`` pipe command (``flac -c -d -s x.flac |``), a segment of a longer recording
(``segments``, lhotse supervisions), a recording at another sample rate, a lhotse source that is a
URL, a command or bytes in memory. The Kaldi and lhotse readers decode such audio once, in the
prepare stage, and hand it to :func:`materialise`, which

* checks the samples as the LibriSpeech reader checks a file (``empty_audio``, ``silent_audio``,
  ``too_short``),
* resamples them to the recipe's rate (torchaudio's sinc resampler, as ``asr_kd.transcribe``
  does) and says so, for the summary's ``resampled`` count,
* writes them as a 16-bit mono WAV at ``<audio_dir>/<utterance id>.wav`` (temp file, then
  rename), and the manifest names that file.

From there on the utterance is an ordinary file: features, evaluation and ``transcribe`` read it
like any other. 16-bit samples (FLAC, WAV, Kaldi's own) are written back exactly.
"""

from __future__ import annotations

import hashlib
import io
import re
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf

from asr_kd.fileio import atomic_path

PIPE_TIMEOUT_S = 600  # one wav.scp command may run this long
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class PipeError(RuntimeError):
    """A ``wav.scp`` command that failed; the message names the command, its status and stderr."""

    def __init__(self, message: str, returncode: int) -> None:
        super().__init__(message)
        self.returncode = returncode


def run_pipe(command: str, timeout: float = PIPE_TIMEOUT_S) -> bytes:
    """The standard output of a ``wav.scp`` command (``flac -c -d -s x.flac |``, the ``|`` removed),
    run by the shell as Kaldi runs it. Raises :class:`PipeError` when it fails or prints nothing."""
    try:
        res = subprocess.run(command, shell=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise PipeError(f"`{command}` ran longer than {timeout:.0f} s", -1) from e
    if res.returncode != 0 or not res.stdout:
        last = res.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["(no stderr)"]
        status = f"exited {res.returncode}" if res.returncode else "wrote no audio"
        raise PipeError(f"`{command}` {status}: {last[0]}", res.returncode)
    return res.stdout


def decode_bytes(data: bytes) -> tuple[np.ndarray, int]:
    """(samples (N, C) float32 in [-1, 1), sample rate) of audio bytes in any format soundfile reads."""
    samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return samples, rate


def read_file(path: str | Path) -> tuple[np.ndarray, int]:
    """(samples (N, C) float32, sample rate) of an audio file."""
    samples, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return samples, rate


def sample_problem(samples: np.ndarray, min_samples: int = 1) -> str | None:
    """The LibriSpeech reader's skip reason for mono samples (N,), or None when they are usable."""
    if samples.size == 0:
        return "empty_audio"
    if not np.any(samples):
        return "silent_audio"
    if len(samples) < min_samples:
        return "too_short"
    return None


def resample(samples: np.ndarray, rate: int, to_rate: int) -> np.ndarray:
    """Mono samples (N,) at ``rate`` -> (M,) at ``to_rate`` (torchaudio's windowed-sinc resampler)."""
    import torch
    import torchaudio.functional as taf

    out = taf.resample(torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32)), rate, to_rate)
    return out.numpy()


def audio_file_name(utt_id: str) -> str:
    """``<utt_id>.wav``; an id that is not a safe file name (``/``, spaces, a leading dot ...) gets
    its unsafe characters replaced and a short hash, so two ids never share a file."""
    if _SAFE.match(utt_id):
        return f"{utt_id}.wav"
    digest = hashlib.sha1(utt_id.encode()).hexdigest()[:8]
    return f"{re.sub(r'[^A-Za-z0-9._-]', '_', utt_id).lstrip('.')}-{digest}.wav"


def materialise(samples: np.ndarray, rate: int, out_dir: Path, utt_id: str, sample_rate: int,
                min_samples: int = 1) -> tuple[str | None, int, str, bool]:
    """Check mono ``samples`` (N,) at ``rate``, resample them to ``sample_rate`` and write them as
    ``out_dir/<utt_id>.wav`` (16-bit). Returns (skip reason or None, number of samples written,
    the file, whether they were resampled); nothing is written for a skipped utterance."""
    problem = sample_problem(samples)
    if problem:
        return problem, len(samples), "", False
    resampled = rate != sample_rate
    if resampled:
        samples = resample(samples, rate, sample_rate)
    if len(samples) < min_samples:
        return "too_short", len(samples), "", resampled
    path = Path(out_dir).resolve() / audio_file_name(utt_id)
    with atomic_path(path) as tmp:
        sf.write(str(tmp), np.clip(samples, -1.0, 32767 / 32768), sample_rate, subtype="PCM_16", format="WAV")
    return None, len(samples), str(path), resampled


def mono(samples: np.ndarray) -> np.ndarray:
    """(N, C) -> (N,): the one channel, or the mean of several (a downmix)."""
    return samples[:, 0] if samples.shape[1] == 1 else samples.mean(axis=1)
