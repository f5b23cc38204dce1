"""The embedded synthetic corpus: synthesizer voices reading generated sentences, in LibriSpeech layout.

``python -m data_prep.synthetic --out DIR --size {smoke,tiny,tiny-wer,small} [--seed N] [--festival] [--text books]``
writes::

    DIR/train-synth/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac   16 kHz mono 16-bit FLAC
    DIR/train-synth/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt    lines like: 100-1000-0000 THE OLD ...
    DIR/dev-synth/...  DIR/test-synth/...
    DIR/SPEAKERS.TXT        LibriSpeech-style speaker table (sex, subset, minutes, voice as the name)
    DIR/lm-text.txt         LM training sentences, one a line; no dev or test sentence among them
    DIR/SYNTHETIC.json      completion marker (size, seed, generator version, statistics), written last

A speaker is one synthesizer voice: an espeak-ng English voice + variant (``en-gb+f3``) at a rate
and pitch, or a flite voice (kal16, awb, rms, slt) at an F0 target and tempo, optionally shifted in
pitch and formants with sox. Every split has both sexes of both synthesizers; espeak-ng
voice+variant pairs, and flite parameter sets, are never shared between splits, and dev/test
espeak-ng voices only use accents (base voices) that training has. Sentences come from
:mod:`data_prep.synthetic_text`'s grammar (``--text template``, the default), or with ``--text
books`` from Jane Austen's novels (:mod:`data_prep.book_text`: real prose, the LM text of its own
chapters, dev and test from held-out chapters; the corpus directory of the recipe ends in
``-books``); every utterance's sentence is unique, so dev and test sentences never occur in train
(nor in the LM text). Each utterance gets seeded edge silence, level and mild
additive noise; there is no dither anywhere, so a seed fixes every sample.

``--festival`` adds a third synthesizer to the *training* split only: speakers made from festival's
ked voice (a US male diphone voice built from recorded speech, ``festival festvox-kdlpc16k``) at an
F0 target and tempo, shifted with sox, male and female. Festival has one such English voice whose
speaker flite lacks, so a held-out festival speaker would be the same recorded voice as the
training ones: it is a training-side family, a richer training set (what it did for voices unheard
in training: docs/experiments/festival-voices.md; flite is festival's C port, which matters for
flite's diphone voice kal16 more than for its clustergen ones). Such a corpus is passed to the
recipe as --data-root. The festival speakers, their
sentences and their audio come from random streams of their own and take the ids after the test
speakers, so every other file of the corpus is the same with or without them.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from asr_kd.data.manifest import Utterance
from asr_kd.fileio import write_json, write_text
from asr_kd.parallel import worker_map
from asr_kd.progress import progress
from data_prep.librispeech import CorpusError
from data_prep.synthetic_text import SentenceGenerator, vocabulary

log = logging.getLogger(__name__)

SUBSETS = {"train": "train-synth", "dev": "dev-synth", "test": "test-synth"}
SAMPLE_RATE = 16000
GENERATOR_VERSION = 4
MARKER_NAME = "SYNTHETIC.json"
LM_TEXT_NAME = "lm-text.txt"
SPEAKERS_NAME = "SPEAKERS.TXT"
TEXTS = ("template", "books")  # --text: data_prep.synthetic_text's grammar, or data_prep.book_text
SYNTHS = ("espeak", "flite")  # in every split; festival (--festival) in the training split only
TOOLS = ("espeak-ng", "flite", "sox")
INSTALL_HINT = "install espeak-ng, flite and sox (e.g. sudo apt-get install espeak-ng flite sox)"
FESTIVAL_HINT = "install festival and its ked voice (e.g. sudo apt-get install festival festvox-kdlpc16k)"
GENDERS = ("M", "F")
SYNTH_OF_PROGRAM = {"espeak-ng": "espeak", "flite": "flite", "festival": "festival"}  # SPEAKERS.TXT's names


@dataclass(frozen=True)
class SizeSpec:
    """How big a corpus is: speakers per (synthesizer, sex) and utterances per speaker, per split."""

    speakers: dict[str, dict[tuple[str, str], int]]  # split -> (synth, sex) -> number of speakers
    utts_per_speaker: dict[str, int]  # split -> utterances
    utts_per_chapter: int
    lm_sentences: int
    festival_train: tuple[int, int] = (0, 0)  # --festival: festival training speakers (M, F)


def _grid(espeak_m: int, espeak_f: int, flite_m: int, flite_f: int) -> dict[tuple[str, str], int]:
    return {("espeak", "M"): espeak_m, ("espeak", "F"): espeak_f, ("flite", "M"): flite_m, ("flite", "F"): flite_f}


SIZES: dict[str, SizeSpec] = {
    # seconds to generate; for tests and the smoke preset
    "smoke": SizeSpec({"train": _grid(2, 2, 2, 2), "dev": _grid(1, 1, 1, 1), "test": _grid(1, 1, 1, 1)},
                      {"train": 25, "dev": 5, "test": 5}, utts_per_chapter=25, lm_sentences=5000,
                      festival_train=(1, 1)),
    # the demo default: about 1.3 h
    "tiny": SizeSpec({"train": _grid(7, 7, 5, 5), "dev": _grid(2, 2, 1, 1), "test": _grid(2, 2, 1, 1)},
                     {"train": 50, "dev": 25, "test": 25}, utts_per_chapter=25, lm_sentences=30000,
                     festival_train=(3, 3)),
    # the WER demo (issue 33), for --text books: tiny's training voices at tiny's training hours (book
    # sentences are 17 words, 5.9 s, against the template's 8), and a test set of 1,000 utterances:
    # a WER of 10-20 % resolved to +-10 % relative or better (data_prep.book_text.expected_resolution);
    # about 1.3 h train, 0.8 h dev, 1.6 h test
    "tiny-wer": SizeSpec({"train": _grid(7, 7, 5, 5), "dev": _grid(2, 2, 1, 1), "test": _grid(3, 3, 2, 2)},
                         {"train": 32, "dev": 84, "test": 100}, utts_per_chapter=25, lm_sentences=30000,
                         festival_train=(3, 3)),
    # several hours
    "small": SizeSpec({"train": _grid(20, 20, 10, 10), "dev": _grid(3, 3, 2, 2), "test": _grid(3, 3, 2, 2)},
                      {"train": 80, "dev": 40, "test": 40}, utts_per_chapter=40, lm_sentences=100000,
                      festival_train=(8, 8)),
}

# -- voices ---------------------------------------------------------------------------------------
ESPEAK_BASES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd",
                "en-029", "en-us-nyc")
ESPEAK_VARIANTS = {
    "M": ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "adam", "david", "edward", "john", "paul",
          "robert", "max", "benjamin"),
    "F": ("f1", "f2", "f3", "f4", "f5", "Annie", "aunty", "belinda", "linda", "steph", "Andrea"),
}
# Not used: "Alicia" (voicing 38, unvoiced consonants at 20 %, echo 40 ms at 50 %: a near-whispered,
# echoing voice unlike any other). As a held-out test voice of a v3 corpus every system read it
# at ~66 % WER (the other five test voices: 0-6 %), so the test WER measured that one voice.
# flite voice families: (voice, F0 target range in Hz or None for the voice's own, sox shift range in cents)
FLITE_FAMILIES = {
    "M": (("kal16", (85, 130), (-100, 100)), ("awb", (95, 140), (-100, 100)), ("rms", None, (-150, 150)),
          ("slt", (110, 130), (-500, -400))),
    "F": (("slt", (160, 240), (0, 200)), ("kal16", (190, 230), (350, 450)), ("awb", (190, 230), (350, 450)),
          ("rms", None, (450, 550))),
}
# festival voice families, as flite's: (voice, F0 target range in Hz, sox shift range in cents)
FESTIVAL_FAMILIES = {"M": (("ked", (90, 130), (-150, 150)),), "F": (("ked", (180, 230), (350, 500)),)}


@dataclass(frozen=True)
class Voice:
    """One speaker: a synthesizer voice with its settings."""

    synth: str  # espeak | flite | festival
    name: str  # espeak: "<base>+<variant>"; flite, festival: a voice name
    sex: str  # M | F
    rate: float  # espeak: words per minute; flite, festival: duration stretch (1.0 = the voice's own)
    pitch: int  # espeak: pitch 0-99; flite, festival: F0 target mean in Hz (0 = the voice's own)
    shift_cents: int  # sox pitch+formant shift (0 = none)

    def describe(self) -> str:
        if self.synth == "espeak":
            base = f"espeak-ng {self.name} s{self.rate:g} p{self.pitch}"
        else:
            base = f"{self.synth} {self.name} stretch{self.rate:g} f0{self.pitch or 'own'}"
        return base + (f" shift{self.shift_cents:+d}" if self.shift_cents else "")


@dataclass(frozen=True)
class Job:
    """One utterance to synthesise (everything random already drawn, so workers are deterministic)."""

    path: str  # absolute output .flac path
    text: str
    voice: Voice
    peak: float  # speech peak level before noise
    snr_db: float  # additive noise level; inf = no noise
    pad_s: tuple[float, float]  # silence before/after the speech
    noise_seed: int


def _espeak_voices(rng: random.Random, sex: str, counts: list[int]) -> list[list[Voice]]:
    """espeak-ng voices per split (``counts`` in SUBSETS order, train first), each with a random rate
    and pitch; no base+variant pair is used twice.

    The base voice sets the accent (its phoneme inventory and realisations), the variant the voice
    quality. Training cycles through the accents; dev and test use only accents training has, so
    held-out speakers are new voices of known accents, as in LibriSpeech (an accent never heard in
    training measures accent transfer instead, and punishes the detailed context-dependent models).
    """
    bases = list(ESPEAK_BASES)
    rng.shuffle(bases)
    variants = list(ESPEAK_VARIANTS[sex])
    rng.shuffle(variants)
    used: set[tuple[str, str]] = set()
    train_bases = bases[: max(1, min(counts[0], len(bases)))]
    out = []
    for i, n in enumerate(counts):
        pool = bases if i == 0 else train_bases
        offset = 0 if i == 0 else rng.randrange(len(pool))
        split_voices = []
        for j in range(n):
            base = pool[(offset + j) % len(pool)]
            k = len(used) % len(variants)  # variants in turn too, so voice qualities vary as well
            free = [v for v in variants[k:] + variants[:k] if (base, v) not in used]
            if not free:
                base_free = [(b, v) for b in pool for v in variants if (b, v) not in used]
                if not base_free:
                    raise ValueError(f"asked for {sum(counts)} espeak-ng {sex} speakers; the "
                                     f"{len(pool)} accents x {len(variants)} variants allowed are used up")
                base, variant = base_free[0]
            else:
                variant = free[0]
            used.add((base, variant))
            split_voices.append(Voice("espeak", f"{base}+{variant}", sex, rate=rng.randint(140, 185),
                                      pitch=rng.randint(30, 70), shift_cents=0))
        out.append(split_voices)
    return out


def _families(synth: str, sex: str) -> tuple:
    return (FLITE_FAMILIES if synth == "flite" else FESTIVAL_FAMILIES)[sex]


def _family_voice(rng: random.Random, synth: str, sex: str, family: int) -> Voice:
    name, f0_range, shift_range = _families(synth, sex)[family]
    f0 = rng.randrange(f0_range[0], f0_range[1] + 1, 5) if f0_range else 0
    return Voice(synth, name, sex, rate=round(rng.uniform(0.85, 1.2), 2), pitch=f0,
                 shift_cents=rng.randrange(shift_range[0], shift_range[1] + 1, 10))


def _family_voices(rng: random.Random, sex: str, counts: list[int], synth: str = "flite") -> list[list[Voice]]:
    """flite (or festival) speakers for each split: families in turn (each split starts at a random
    one), unique settings."""
    seen: set[Voice] = set()
    out = []
    families = len(_families(synth, sex))
    for n in counts:
        first, split_voices = rng.randrange(families), []
        for i in range(n):
            voice = _family_voice(rng, synth, sex, (first + i) % families)
            while voice in seen:
                voice = _family_voice(rng, synth, sex, (first + i) % families)
            seen.add(voice)
            split_voices.append(voice)
        out.append(split_voices)
    return out


def festival_speakers(spec: SizeSpec, seed: int) -> list[Voice]:
    """The festival training speakers of ``--festival`` (their own random stream)."""
    rng = random.Random(f"festival-speakers-{seed}")
    return [v for sex, n in zip(GENDERS, spec.festival_train) for v in _family_voices(rng, sex, [n], "festival")[0]]


def assign_speakers(spec: SizeSpec, seed: int) -> dict[str, list[Voice]]:
    """Split -> its speakers' voices (disjoint across splits, deterministic for ``seed``); without
    the festival speakers (:func:`festival_speakers`)."""
    rng = random.Random(f"speakers-{seed}")
    splits = list(SUBSETS)
    voices: dict[str, list[Voice]] = {s: [] for s in splits}
    for synth in SYNTHS:
        for sex in GENDERS:
            counts = [spec.speakers[s][(synth, sex)] for s in splits]
            make = _espeak_voices if synth == "espeak" else _family_voices
            for split, vs in zip(splits, make(rng, sex, counts)):
                voices[split].extend(vs)
    return voices


# -- sentences ------------------------------------------------------------------------------------
def draw_sentences(spec: SizeSpec, n_speakers: dict[str, int], seed: int,
                   text: str = "template") -> tuple[dict[str, list[str]], list[str]]:
    """Unique utterance sentences per split (test, dev, then train), and the LM text without dev/test."""
    if text == "books":
        return draw_book_sentences(spec, n_speakers, seed)
    gen = SentenceGenerator(random.Random(f"sentences-{seed}"))
    used: set[str] = set()
    per_split: dict[str, list[str]] = {}
    for split in ("test", "dev", "train"):
        want, got = n_speakers[split] * spec.utts_per_speaker[split], []
        while len(got) < want:
            s = gen.sentence()
            if s not in used:
                used.add(s)
                got.append(s)
        per_split[split] = got
    held_out = set(per_split["dev"]) | set(per_split["test"])
    lm_gen = SentenceGenerator(random.Random(f"lm-{seed}"))
    lm: list[str] = []
    while len(lm) < spec.lm_sentences:
        s = lm_gen.sentence()
        if s not in held_out:
            lm.append(s)
    return per_split, lm


def draw_book_sentences(spec: SizeSpec, n_speakers: dict[str, int],
                        seed: int) -> tuple[dict[str, list[str]], list[str]]:
    """:func:`draw_sentences` for ``--text books``: the first utterances of each split's seeded pool
    (:func:`data_prep.book_text.split_books`), and the whole LM text of the LM chapters
    (``spec.lm_sentences`` does not apply)."""
    from data_prep.book_text import split_books

    books = split_books(seed)
    per_split = {}
    for split in ("test", "dev", "train"):
        pool, want = getattr(books, split), n_speakers[split] * spec.utts_per_speaker[split]
        if want > len(pool):
            raise CorpusError(f"the books text has {len(pool)} {split} utterances; this corpus size needs {want}")
        per_split[split] = pool[:want]
    return per_split, books.lm


# -- audio ----------------------------------------------------------------------------------------
def _run(cmd: list[str], stdin: bytes | None = None, fail_on: str = "") -> bytes:
    """``cmd``'s stdout; a CorpusError if it fails, or if its stderr holds ``fail_on`` (festival's
    text2wave exits 0 after a Scheme error, e.g. a voice that is not installed)."""
    try:
        res = subprocess.run(cmd, input=stdin, capture_output=True, check=False, timeout=120)
    except FileNotFoundError:
        raise CorpusError(f"'{cmd[0]}' is not installed; {INSTALL_HINT}") from None
    if res.returncode != 0 or (fail_on and fail_on in res.stderr.decode(errors="replace")):
        raise CorpusError(f"{' '.join(cmd[:6])} ... failed ({res.returncode}): {res.stderr.decode()[-500:]}")
    return res.stdout


def _synthesize(voice: Voice, text: str) -> bytes:
    """WAV bytes of ``text`` read by ``voice`` (synthesizer's own rate)."""
    spoken = text.lower()  # synthesizers may spell out upper-case words
    if voice.synth == "espeak":
        return _run(["espeak-ng", "-v", voice.name, "-s", str(int(voice.rate)), "-p", str(voice.pitch),
                     "--stdout", spoken])
    if voice.synth == "festival":
        return _festival(voice, spoken)
    with tempfile.TemporaryDirectory(prefix="flite-") as tmp:
        out = Path(tmp) / "out.wav"
        cmd = ["flite", "-voice", voice.name, "--setf", f"duration_stretch={voice.rate}"]
        if voice.pitch:
            cmd += ["--setf", f"int_f0_target_mean={voice.pitch}"]
        _run([*cmd, "-t", spoken, "-o", str(out)])
        return out.read_bytes()


def _festival(voice: Voice, text: str) -> bytes:
    """festival's text2wave: the voice, its duration stretch, and its F0 target (the voice's own
    linear-regression intonation model, re-targeted: std in proportion to the mean, as the voice's
    own 105 / 15 Hz)."""
    with tempfile.TemporaryDirectory(prefix="festival-") as tmp:
        out = Path(tmp) / "out.wav"
        cmd = ["text2wave", "-eval", f"(voice_{voice.name}_diphone)",
               "-eval", f"(Parameter.set 'Duration_Stretch {voice.rate})"]
        if voice.pitch:
            cmd += ["-eval", f"(set! int_lr_params '((target_f0_mean {voice.pitch}) (target_f0_std "
                             f"{round(voice.pitch / 7)}) (model_f0_mean 170) (model_f0_std 34)))"]
        _run([*cmd, "-o", str(out)], stdin=text.encode(), fail_on="SIOD ERROR")
        return out.read_bytes()


def _to_16k(wav: bytes, shift_cents: int) -> bytes:
    """sox: optional pitch+formant shift, then resample to 16 kHz mono 16-bit; -D = no dither."""
    effects = (["pitch", str(shift_cents)] if shift_cents else []) + ["rate", "-h", str(SAMPLE_RATE)]
    return _run(["sox", "-D", "-t", "wav", "-", "-t", "wav", "-b", "16", "-c", "1", "-", *effects], stdin=wav)


def render(job: Job) -> np.ndarray:
    """The utterance's samples: speech at ``job.peak``, edge silence, seeded noise.  (num_samples,) float32"""
    audio, sr = sf.read(io.BytesIO(_to_16k(_synthesize(job.voice, job.text), job.voice.shift_cents)),
                        dtype="float64")
    if sr != SAMPLE_RATE or audio.ndim != 1 or len(audio) == 0:
        raise CorpusError(f"synthesizer gave {audio.shape} samples at {sr} Hz for {job.voice.describe()}")
    speech = audio / max(np.abs(audio).max(), 1e-9) * job.peak
    before, after = (int(p * SAMPLE_RATE) for p in job.pad_s)
    x = np.concatenate([np.zeros(before), speech, np.zeros(after)])
    if np.isfinite(job.snr_db):
        rng = np.random.default_rng(job.noise_seed)
        white = rng.standard_normal(len(x))
        noise = 0.5 * white + 0.5 * np.convolve(white, np.ones(4) / 2, mode="same")  # a little low-passed
        speech_power = float(np.mean(speech**2))
        noise *= np.sqrt(speech_power / 10 ** (job.snr_db / 10) / np.mean(noise**2))
        x = x + noise
    return np.clip(x, -1.0, 32767 / 32768).astype(np.float32)


def _render_job(job: Job) -> int:
    x = render(job)
    sf.write(job.path, x, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    return len(x)


# -- corpus ---------------------------------------------------------------------------------------
def _plan(out: Path, spec: SizeSpec, seed: int, noise: bool, festival: bool = False, text: str = "template"
          ) -> tuple[list[Job], dict[str, list[Voice]], dict[Path, list[str]], list[str], dict]:
    """Everything random, decided up front: speakers, ids, sentences, audio jobs, transcript lines.
    The festival speakers come last, from streams of their own (the rest is the same without them)."""
    voices = assign_speakers(spec, seed)
    extra = festival_speakers(spec, seed) if festival else []
    counts = {s: len(v) + (len(extra) if s == "train" else 0) for s, v in voices.items()}
    sentences, lm = draw_sentences(spec, counts, seed, text)  # festival's train sentences: drawn after the others
    rng = random.Random(f"audio-{seed}")
    jobs: list[Job] = []
    trans: dict[Path, list[str]] = defaultdict(list)
    speakers: dict[str, dict[str, Any]] = {}
    speaker_id, chapter_id = 100, 1000
    train_texts = iter(sentences["train"])
    passes = [(split, subset, voices[split], train_texts if split == "train" else iter(sentences[split]), rng)
              for split, subset in SUBSETS.items()]
    if extra:
        passes.append(("train", SUBSETS["train"], extra, train_texts, random.Random(f"festival-audio-{seed}")))
        voices = {**voices, "train": voices["train"] + extra}
    for split, subset, split_voices, texts, rng in passes:
        for voice in split_voices:
            speaker_id += 1
            speakers[str(speaker_id)] = {"subset": subset, "voice": voice}
            for u in range(spec.utts_per_speaker[split]):
                if u % spec.utts_per_chapter == 0:
                    chapter_id += 1
                    chapter_dir = out / subset / str(speaker_id) / str(chapter_id)
                utt_id = f"{speaker_id}-{chapter_id}-{u % spec.utts_per_chapter:04d}"
                text = next(texts)
                trans[chapter_dir / f"{speaker_id}-{chapter_id}.trans.txt"].append(f"{utt_id} {text}")
                jobs.append(Job(
                    path=str(chapter_dir / f"{utt_id}.flac"), text=text, voice=voice,
                    peak=round(rng.uniform(0.3, 0.9), 3),
                    snr_db=round(rng.uniform(18.0, 35.0), 1) if noise else float("inf"),
                    pad_s=(round(rng.uniform(0.15, 0.5), 3), round(rng.uniform(0.15, 0.5), 3)),
                    noise_seed=rng.getrandbits(32),
                ))
    return jobs, voices, trans, lm, speakers


def _synthesize_all(jobs: list[Job], workers: int) -> list[int]:
    """Render every job (in ``workers`` processes); returns samples per job in job order."""
    rendered = worker_map(_render_job, jobs, workers, chunksize=4)
    return list(progress(rendered, total=len(jobs), desc="synthesizing", unit="utt"))


def _speakers_table(speakers: dict[str, dict[str, Any]], minutes: dict[str, float]) -> str:
    lines = [";ID  |SEX| SUBSET      |MINUTES| NAME"]
    for spk, info in speakers.items():
        v: Voice = info["voice"]
        lines.append(f"{spk:<5}| {v.sex} | {info['subset']:<12}| {minutes[spk]:5.2f} | {v.describe()}")
    return "\n".join(lines) + "\n"


def _stats(jobs: list[Job], samples: list[int], voices: dict[str, list[Voice]]) -> dict[str, Any]:
    per_split: dict[str, Any] = {}
    for split, subset in SUBSETS.items():
        idx = [i for i, j in enumerate(jobs) if f"{os.sep}{subset}{os.sep}" in j.path]
        per_split[split] = {
            "subset": subset,
            "utterances": len(idx),
            "hours": round(sum(samples[i] for i in idx) / SAMPLE_RATE / 3600, 4),
            "speakers": len(voices[split]),
            "speakers_by_synth_sex": dict(Counter(f"{v.synth}-{v.sex}" for v in voices[split])),
        }
    return per_split


def build_corpus(out: Path, size: str, seed: int, *, workers: int = 2, noise: bool = True,
                 festival: bool = False, text: str = "template") -> dict[str, Any]:
    """Write the whole corpus into ``out`` (which must not exist); returns the marker contents."""
    spec = SIZES[size]
    t0 = time.monotonic()
    jobs, voices, trans, lm, speakers = _plan(out, spec, seed, noise, festival, text)
    for path in {Path(j.path).parent for j in jobs}:
        path.mkdir(parents=True, exist_ok=True)
    samples = _synthesize_all(jobs, workers)
    for path, lines in trans.items():
        write_text(path, "\n".join(sorted(lines)) + "\n")
    minutes: dict[str, float] = Counter()
    for job, n in zip(jobs, samples):
        minutes[Path(job.path).name.split("-")[0]] += n / SAMPLE_RATE / 60
    write_text(out / SPEAKERS_NAME, _speakers_table(speakers, minutes))
    write_text(out / LM_TEXT_NAME, "\n".join(lm) + "\n")
    marker = {
        "size": size, "seed": seed, "noise": noise, "generator_version": GENERATOR_VERSION, "festival": festival,
        "text": text,
        "splits": _stats(jobs, samples, voices),
        # the words the sentences may use: the grammar's, or (books) the LM text's
        "vocabulary_size": len(vocabulary()) if text == "template" else len({w for s in lm for w in s.split()}),
        "lm_sentences": len(lm),
        "generation_seconds": round(time.monotonic() - t0, 1),
        "workers": workers,
    }
    write_json(out / MARKER_NAME, marker)  # last
    return marker


def speaker_synthesizers(root: Path) -> dict[str, str]:
    """Speaker id -> ``espeak``, ``flite`` or ``festival``, from a synthetic corpus's SPEAKERS.TXT."""
    path = Path(root) / SPEAKERS_NAME
    if not path.exists():
        raise CorpusError(f"{path} is missing: {root} is not a finished synthetic corpus; regenerate it")
    out = {}
    for line in path.read_text().splitlines():
        if line.startswith(";") or not line.strip():
            continue
        fields = [f.strip() for f in line.split("|")]
        if len(fields) < 5:
            raise CorpusError(f"{path}: unexpected line {line!r}; regenerate the corpus")
        out[fields[0]] = SYNTH_OF_PROGRAM.get(fields[4].split(" ", 1)[0], "")
        if not out[fields[0]]:
            raise CorpusError(f"{path}: speaker {fields[0]}'s voice {fields[4]!r} is not espeak-ng, flite "
                              "or festival; regenerate the corpus")
    return out


def utterance_synthesizers(root: Path, utts: Iterable[Utterance]) -> dict[str, str]:
    """Utterance id -> the synthesizer of its voice (``speaker_synthesizers``), for utterances of the
    corpus at ``root``; an augmented copy (speaker ``sp0.9-<speaker>``, ...) gets its source's. An
    utterance whose speaker the corpus does not list is left out."""
    from asr_kd.data.augment import is_copy

    synth_of = speaker_synthesizers(root)
    out = {}
    for u in utts:
        speaker = u.speaker
        while speaker not in synth_of and is_copy(speaker):
            speaker = speaker.split("-", 1)[1]
        if speaker in synth_of:
            out[u.id] = synth_of[speaker]
    return out


def _marker_matches(root: Path, size: str, seed: int, noise: bool, festival: bool = False,
                    text: str = "template") -> bool:
    """True if ``root`` holds a finished corpus of these settings; raises if it holds something else."""
    marker_path = root / MARKER_NAME
    if not root.exists():
        return False
    if not marker_path.exists():
        raise CorpusError(f"{root} exists but is not a finished synthetic corpus (no {MARKER_NAME}); "
                           "delete it or choose another directory")
    marker = json.loads(marker_path.read_text())
    want = {"size": size, "seed": seed, "noise": noise, "generator_version": GENERATOR_VERSION, "festival": festival,
            "text": text}
    before = {"festival": False, "text": "template"}  # corpora made before --festival / --text had neither
    have = {k: marker.get(k, before.get(k)) for k in want}
    if have != want:
        raise CorpusError(f"{root} holds a synthetic corpus made with {have}, not {want}; "
                           "delete it (or pass --force to data_prep.synthetic) to regenerate")
    return True


def check_festival() -> None:
    """Raise a :class:`CorpusError` saying what to install unless festival can speak with ked."""
    if shutil.which("text2wave") is None:
        raise CorpusError(f"--festival needs festival's text2wave, not found; {FESTIVAL_HINT}")
    try:
        _festival(Voice("festival", "ked", "M", rate=1.0, pitch=0, shift_cents=0), "test")
    except CorpusError as e:
        raise CorpusError(f"festival cannot speak with its ked voice ({str(e)[-200:].strip()}); {FESTIVAL_HINT}") from None


def ensure_corpus(root: Path, size: str, seed: int, *, workers: int = 2, noise: bool = True,
                  festival: bool = False, text: str = "template") -> None:
    """Create the corpus at ``root`` once; a finished one with the same settings is left alone.

    The corpus is built in ``.<name>.partial`` beside ``root`` and renamed into place after its marker
    is written, so a killed run never leaves a half corpus that looks finished.
    """
    root = Path(root)
    if size not in SIZES:
        raise ValueError(f"unknown synthetic corpus size {size!r}; choose one of {', '.join(SIZES)}")
    if text not in TEXTS:
        raise ValueError(f"unknown synthetic corpus text {text!r}; choose one of {', '.join(TEXTS)}")
    if _marker_matches(root, size, seed, noise, festival, text):
        log.info("synthetic corpus %s already exists (size=%s seed=%d)", root, size, seed)
        return
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        raise CorpusError(f"cannot generate the synthetic corpus: {', '.join(missing)} not found; {INSTALL_HINT}")
    if festival:
        check_festival()
    if text == "books":
        from data_prep.book_text import find_package

        find_package()  # raises, saying what to install
    partial = root.parent / f".{root.name}.partial"
    if partial.exists():
        log.info("removing the unfinished build %s", partial)
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    log.info("generating the %s synthetic corpus (seed %d, %s text) in %s", size, seed, text, root)
    marker = build_corpus(partial, size, seed, workers=workers, noise=noise, festival=festival, text=text)
    os.replace(partial, root)
    log.info("synthetic corpus done in %.1f s: %s", marker["generation_seconds"],
             ", ".join(f"{s} {v['utterances']} utts {v['hours']:.2f} h {v['speakers']} spk"
                       for s, v in marker["splits"].items()))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m data_prep.synthetic", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="corpus root to create (holds train-synth/ dev-synth/ test-synth/)")
    p.add_argument("--size", default="tiny", choices=list(SIZES))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="synthesis processes")
    p.add_argument("--no-noise", action="store_true", help="clean audio (no additive noise)")
    p.add_argument("--festival", action="store_true",
                   help="add festival ked speakers to the training split (needs festival festvox-kdlpc16k)")
    p.add_argument("--text", default="template", choices=TEXTS,
                   help="the sentences: the template grammar, or Jane Austen's novels "
                        "(needs Debian's r-cran-janeaustenr)")
    p.add_argument("--force", action="store_true", help="delete an existing synthetic corpus at --out first")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    root = Path(args.out)
    if args.force and (root / MARKER_NAME).exists():
        shutil.rmtree(root)
    try:
        ensure_corpus(root, args.size, args.seed, workers=args.workers, noise=not args.no_noise,
                      festival=args.festival, text=args.text)
    except (CorpusError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(json.loads((root / MARKER_NAME).read_text()), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())


GROUP_KIND = "synthesizer"  # what test_groups groups by: report.json's derived.test_by_synthesizer


def test_groups(root: Path, utts: Sequence[Utterance]) -> dict[str, list[str]] | None:
    """``utts`` (a test split of the corpus at ``root``) by the synthesizer of their voices, each
    group's utterance ids in order, for a report's per-group WER (:data:`GROUP_KIND`); None when
    ``root`` is no synthetic corpus or the split has one synthesizer only."""
    if not (Path(root) / SPEAKERS_NAME).exists():
        return None
    synth_of = utterance_synthesizers(Path(root), utts)
    groups: dict[str, list[str]] = {}
    for u in utts:
        groups.setdefault(synth_of.get(u.id, "unknown"), []).append(u.id)
    return groups if len(groups) > 1 else None


def voices_description(root: Path) -> str:
    """The synthetic voices of the corpus at ``root``, for a model card: its marker says whether
    ``--festival`` added festival's ked voice to the training split."""
    marker = Path(root) / MARKER_NAME
    festival = marker.exists() and bool(json.loads(marker.read_text()).get("festival"))
    return "espeak-ng and flite" + (", festival's ked voice" if festival else "")
