"""A tiny spoken corpus for the aligner tests: a handful of espeak-ng sentences in two voices.

Made once per session under a temp dir: 16 kHz audio -> 13 MFCCs (torchaudio's Kaldi-compatible
``mfcc``), a lang directory built from CMUdict for the words used.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

SENTENCES = (
    "THE CAT SAT ON THE MAT",
    "A DOG RAN IN THE PARK",
    "SHE SELLS SEA SHELLS BY THE SHORE",
    "WE WALKED HOME AFTER DINNER",
    "THE SUN IS BRIGHT TODAY",
    "OPEN THE WINDOW PLEASE",
    "MY BROTHER LIKES GREEN APPLES",
    "THEY BOUGHT SIX RED CHAIRS",
    "THE BOOK WAS ON THE TABLE",
    "PLEASE CALL ME TOMORROW MORNING",
    "HIS VOICE WAS VERY QUIET",
    "THE CHILDREN PLAYED IN THE GARDEN",
    "WE SHOULD JOIN THEM FOR LUNCH",
    "THE OLD MAN READ THE NEWSPAPER",
    "BOYS AND GIRLS LOVE SUMMER",
    "THE TRAIN LEAVES AT NINE",
)
VOICES = ("en-us", "en-gb+f3")


@dataclass
class TinyCorpus:
    lang_dir: Path
    mfcc: dict[str, np.ndarray]  # utt -> (T, 13)
    text: dict[str, list[str]]  # utt -> words
    utt2spk: dict[str, str]


def _synth(text: str, voice: str, wav: Path) -> np.ndarray:
    import soundfile as sf
    import torch
    import torchaudio

    subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", str(wav), text.lower()], check=True,
                   capture_output=True, timeout=30)
    samples, sr = sf.read(str(wav), dtype="float32")
    wave = torch.from_numpy(samples)[None, :]  # (1, N)
    return torchaudio.functional.resample(wave, sr, 16000)


def _mfcc(wave) -> np.ndarray:
    import torch
    import torchaudio

    # Kaldi's default dither (1.0, seeded here): espeak-ng pads with digital silence, whose log
    # energy sits at the floor (c0 = -76.5). Without dither, on a machine with AVX512 one of these
    # utterances failed to align at any beam; the recipe's corpus has its noise floor instead.
    torch.manual_seed(0)
    feats = torchaudio.compliance.kaldi.mfcc(wave * 32768, sample_frequency=16000, num_ceps=13, dither=1.0)
    return feats.numpy().astype(np.float32)  # (T, 13)


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> TinyCorpus:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    from asr_kd.data.lang import build_lexicon, write_lang
    from asr_kd.data.lexicon import load_lexicon

    root = tmp_path_factory.mktemp("tiny_corpus")
    corpus = TinyCorpus(lang_dir=root / "lang", mfcc={}, text={}, utt2spk={})
    for v, voice in enumerate(VOICES):
        for s, sentence in enumerate(SENTENCES):
            utt = f"spk{v}-utt{s}"
            corpus.mfcc[utt] = _mfcc(_synth(sentence, voice, root / f"{utt}.wav"))
            corpus.text[utt] = sentence.split()
            corpus.utt2spk[utt] = f"spk{v}"
    words = {w for s in SENTENCES for w in s.split()}
    lexicon, missing = build_lexicon(words, load_lexicon(), position_dependent=False)
    assert not missing
    write_lang(corpus.lang_dir, lexicon, sil_prob=0.5, position_dependent=False)
    return corpus
