"""The LibriSpeech-layout reader: subset directories -> one manifest per split, bad input named and counted.

A corpus root holds subsets (``train-clean-100``, ``dev-clean``, ... or the synthetic corpus's
``train-synth`` ...), each laid out as::

    <subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac
    <subset>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt   lines like: 19-198-0001 THE WORDS ...

Real LibriSpeech and the synthetic corpus go through the same code. Every audio file is decoded
whole (soundfile, in threads), so that audio the later stages cannot use is caught here and not
hours later in ``features`` or ``align``. Problems are skipped and counted by reason, with the
first few file names, in the stage summary:

* audio: ``unreadable_audio`` (cannot be opened, or fails to decode anywhere in the file),
  ``truncated_audio`` (a WAV whose data is shorter than its header says), ``wrong_sample_rate``,
  ``not_mono``, ``empty_audio`` (no samples), ``silent_audio`` (every sample zero: digital
  silence), ``too_short`` (fewer samples than ``min_samples``: the recipe asks for one DNN input
  window, 26 frames of 10 ms plus a 25 ms window = 0.275 s);
* transcripts: ``empty_transcript``, ``bad_transcript_line``, ``non_utf8_transcript`` (a line
  that is not UTF-8: named ``file:line``, its utterance skipped), ``duplicate_id`` (an id on two
  transcript lines, named ``file:line``; or ``X.flac`` and ``X.wav`` in one chapter: the
  ``.flac`` is kept, the order of ``AUDIO_SUFFIXES``, and the other file is named);
* pairing: ``missing_transcript_file`` (a chapter's audio without its ``.trans.txt``),
  ``transcript_without_audio``, ``audio_without_transcript``;
* ``oov`` (with ``data.oov_policy=skip``; policy ``error`` stops and lists the words; the default,
  ``g2p``, keeps the utterances and counts them as ``g2p_utterances``: the lang stage gives their
  words espeak-ng's pronunciations).

A missing corpus root or subset directory is a :class:`CorpusError` naming it. Which subsets make
a split is the caller's choice; :data:`DEFAULT_SUBSETS` are LibriSpeech's own (train-clean-100,
dev-clean, test-clean). :func:`read_corpus` takes plain arguments and returns the manifest (the
utterances of each split) with its account; it knows nothing of run directories or the recipe's
config: the prepare stage (:mod:`asr_kd.stages.prepare`) writes the manifests.
"""

from __future__ import annotations

import logging
import os
import random
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from asr_kd.data.lexicon import find_oov, load_lexicon
from asr_kd.data.manifest import Utterance
from asr_kd.parallel import worker_map
from asr_kd.progress import progress

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".flac", ".wav")  # in order of preference when one id has both
DEFAULT_SUBSETS = {"train": ("train-clean-100",), "dev": ("dev-clean",), "test": ("test-clean",)}
LM_TEXT_NAMES = ("lm-text.txt", "librispeech-lm-norm.txt")  # looked for in the corpus root
MAX_EXAMPLES = 5  # offending file names kept per skip reason
MAX_CHECK_THREADS = 8  # audio files decoded at once (libsndfile releases the GIL)
_UTT_ID = re.compile(r"^(\d+)-(\d+)-(\d+)$")
_BLOCK = 1 << 20  # samples decoded at a time
# libsndfile's header log of a WAV cut short: "data : 96582 (should be 48269)"
_WAV_SHORT = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
_WAV_SIZE_UNKNOWN = 0x7FFFF000  # data sizes from here up are placeholders of streamed WAVs, not lengths


class CorpusError(ValueError):
    """The corpus cannot be read as asked (missing directory, OOV words under policy 'error')."""


@dataclass
class Corpus:
    """What the reader returns: the utterances of each split (the manifest) and its account."""

    splits: dict[str, list[Utterance]]  # split -> utterances, in manifest order
    summary: dict[str, Any]  # corpus root, LM text, per split: counts, hours, skipped by reason


@dataclass
class Skips:
    """Skipped items by reason, with the first few offending file names."""

    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def add(self, reason: str, name: str | Path) -> None:
        self.counts[reason] += 1
        if len(self.examples[reason]) < MAX_EXAMPLES:
            self.examples[reason].append(str(name))

    def summary(self) -> dict[str, Any]:
        return {"counts": dict(sorted(self.counts.items())),
                "examples": {r: self.examples[r] for r in sorted(self.counts)}}


# -- scanning -------------------------------------------------------------------------------------
def read_transcripts(path: Path, speaker: str, chapter: str, skips: Skips) -> tuple[dict[str, str], set[str]]:
    """Utterance id -> upper-case text from one ``<speaker>-<chapter>.trans.txt``, and every id it
    names (also those of skipped lines, so their audio is not counted again as untranscribed).

    Lines are decoded one by one: a line that is not UTF-8 skips its utterance
    (``non_utf8_transcript``, named ``file:line``), not the whole corpus."""
    texts: dict[str, str] = {}
    named: set[str] = set()
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                named.add(raw.split(maxsplit=1)[0].decode("utf-8", "replace"))  # its audio is not "untranscribed"
                skips.add("non_utf8_transcript", f"{where} (byte {raw[e.start]:#04x} at column {e.start + 1})")
                continue
            if not line.strip():
                continue
            utt_id, _, text = line.strip().partition(" ")
            m = _UTT_ID.match(utt_id)
            if m is None or (m.group(1), m.group(2)) != (speaker, chapter):
                skips.add("bad_transcript_line", where)
            elif not text.strip():
                named.add(utt_id)
                skips.add("empty_transcript", where)
            elif utt_id in texts:
                skips.add("duplicate_id", where)
            else:
                texts[utt_id] = " ".join(text.upper().split())
                named.add(utt_id)
    return texts, named


def check_audio(path: Path, sample_rate: int, min_samples: int = 1) -> tuple[str | None, int]:
    """(skip reason or None, number of samples): the header checked, then the whole file decoded."""
    try:
        with sf.SoundFile(path) as f:
            frames, sr, channels = f.frames, f.samplerate, f.channels
            if sr != sample_rate:
                return "wrong_sample_rate", frames
            if channels != 1:
                return "not_mono", frames
            if frames <= 0:
                return "empty_audio", frames
            if _wav_cut_short(f.extra_info):
                return "truncated_audio", frames
            decoded, audible = 0, False
            for block in f.blocks(blocksize=_BLOCK, dtype="float32"):  # (n,) float32
                decoded += len(block)
                audible = audible or bool(np.any(block))
    except (sf.LibsndfileError, RuntimeError, ValueError, OSError):
        return "unreadable_audio", 0
    if decoded != frames:
        return "unreadable_audio", decoded
    if not audible:
        return "silent_audio", frames
    if frames < min_samples:
        return "too_short", frames
    return None, frames


def _wav_cut_short(header_log: str) -> bool:
    """True when libsndfile's header log says a WAV's data chunk is longer than the file holds."""
    m = _WAV_SHORT.search(header_log or "")
    return m is not None and int(m.group(2)) < int(m.group(1)) < _WAV_SIZE_UNKNOWN


def chapter_audio(chapter_dir: Path, skips: Skips) -> dict[str, Path]:
    """Utterance id -> audio file of one chapter directory. One id with several files (``X.flac``
    and ``X.wav``): the first suffix of :data:`AUDIO_SUFFIXES` is kept, the others are
    ``duplicate_id``."""
    files = [p for p in chapter_dir.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES]
    files.sort(key=lambda p: (p.stem, AUDIO_SUFFIXES.index(p.suffix.lower()), p.name))
    audio: dict[str, Path] = {}
    for p in files:
        if p.stem in audio:
            skips.add("duplicate_id", f"{p} (same id as {audio[p.stem].name}, which is kept)")
        else:
            audio[p.stem] = p
    return audio


def scan_chapter(chapter_dir: Path, sample_rate: int, skips: Skips, min_samples: int = 1,
                 threads: int = 1) -> list[Utterance]:
    """The good utterances of one ``<speaker>/<chapter>`` directory; everything else counted in
    ``skips``. ``threads`` audio files are decoded at once."""
    speaker, chapter = chapter_dir.parent.name, chapter_dir.name
    audio = chapter_audio(chapter_dir, skips)
    trans_path = chapter_dir / f"{speaker}-{chapter}.trans.txt"
    if not trans_path.exists():
        for p in audio.values():
            skips.add("missing_transcript_file", p)
        return []
    texts, named = read_transcripts(trans_path, speaker, chapter, skips)
    for utt_id in texts:
        if utt_id not in audio:
            skips.add("transcript_without_audio", f"{trans_path} ({utt_id})")
    ids = [u for u in texts if u in audio]
    checked = list(worker_map(partial(check_audio, sample_rate=sample_rate, min_samples=min_samples),
                              [audio[u] for u in ids], threads, start="thread"))
    utts = []
    for utt_id, (reason, frames) in zip(ids, checked):
        if reason:
            skips.add(reason, audio[utt_id])
            continue
        utts.append(Utterance(id=utt_id, speaker=speaker, chapter=chapter, audio=str(audio[utt_id].resolve()),
                              text=texts[utt_id], num_samples=frames, sample_rate=sample_rate))
    for utt_id in sorted(set(audio) - named):
        skips.add("audio_without_transcript", audio[utt_id])
    return utts


def subset_dir(root: Path, subset: str) -> Path:
    """``root/subset``, or a :class:`CorpusError` that lists the subsets that do exist."""
    d = root / subset
    if d.is_dir():
        return d
    have = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    raise CorpusError(
        f"subset directory {d} does not exist; {root} has: {', '.join(have) or '(nothing)'}. "
        "Choose subsets with --set data.train_subsets=... / data.dev_subsets=... / data.test_subsets=..."
    )


def scan_subset(root: Path, subset: str, sample_rate: int, skips: Skips, min_samples: int = 1,
                threads: int = 1) -> list[Utterance]:
    d = subset_dir(root, subset)
    chapters = sorted(c for s in d.iterdir() if s.is_dir() for c in s.iterdir() if c.is_dir())
    utts: list[Utterance] = []
    for chapter_dir in progress(chapters, desc=f"scanning {subset}", unit="chapter", leave=False):
        utts.extend(scan_chapter(chapter_dir, sample_rate, skips, min_samples, threads))
    return utts


def check_threads() -> int:
    """Audio files decoded at once: one per core, at most MAX_CHECK_THREADS (libsndfile releases the GIL)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(MAX_CHECK_THREADS, cores)


# -- policies -------------------------------------------------------------------------------------
def apply_oov_policy(splits: dict[str, list[Utterance]], lexicon: dict, policy: str,
                     skips: dict[str, Skips]) -> dict[str, list[Utterance]]:
    """Drop (policy ``skip``, counted as ``oov``) or refuse (policy ``error``) utterances with OOV
    words; keep them with policy ``g2p`` (the lang stage pronounces the words)."""
    oov_utts = {split: [u for u in utts if find_oov(u.words, lexicon)] for split, utts in splits.items()}
    n_oov = sum(len(v) for v in oov_utts.values())
    if n_oov == 0:
        return splits
    if policy == "g2p":
        n_words = len({w for utts in oov_utts.values() for u in utts for w in find_oov(u.words, lexicon)})
        log.info("kept %d utterance(s) with %d word(s) missing from the lexicon: the lang stage pronounces "
                 "them with espeak-ng (data.oov_policy=g2p)", n_oov, n_words)
        return splits
    if policy == "error":
        raise CorpusError(_oov_message(oov_utts, lexicon))
    kept = {}
    for split, utts in splits.items():
        bad = {u.id for u in oov_utts[split]}
        for u in oov_utts[split]:
            skips[split].add("oov", f"{u.audio} ({' '.join(find_oov(u.words, lexicon))})")
        kept[split] = [u for u in utts if u.id not in bad]
    log.warning("skipped %d utterance(s) with words missing from the lexicon (data.oov_policy=skip)", n_oov)
    return kept


def _oov_message(oov_utts: dict[str, list[Utterance]], lexicon: dict) -> str:
    words: Counter = Counter()
    files = []
    for utts in oov_utts.values():
        for u in utts:
            words.update(find_oov(u.words, lexicon))
            if len(files) < 10:
                files.append(f"{u.audio}: {' '.join(find_oov(u.words, lexicon))}")
    n_utts = sum(len(v) for v in oov_utts.values())
    listed = ", ".join(f"{w} ({c})" for w, c in words.most_common(30))
    return (
        f"{len(words)} word(s) in {n_utts} utterance(s) have no pronunciation: {listed}"
        f"{' ...' if len(words) > 30 else ''}\nfirst files:\n  " + "\n  ".join(files) +
        "\nFix: add them to a lexicon file (lines 'WORD PH1 PH2 ...') and pass --set data.extra_lexicon=FILE, "
        "or skip those utterances with --set data.oov_policy=skip, or pronounce the words with espeak-ng "
        "with --set data.oov_policy=g2p"
    )


def cap_utterances(utts: list[Utterance], cap: int, split: str) -> list[Utterance]:
    """At most ``cap`` utterances (0 = all), a fixed random choice for a given input."""
    if cap <= 0 or len(utts) <= cap:
        return utts
    ordered = sorted(utts, key=lambda u: u.id)
    return random.Random(f"cap-{split}").sample(ordered, cap)


def locate_lm_text(root: Path, lm_text: str = "") -> str:
    """The LM training text: ``lm_text`` if given (must exist), else one in the corpus root, else ""."""
    if lm_text:
        p = Path(lm_text)
        if not p.is_file():
            raise CorpusError(f"data.lm_text={p} does not exist; fix the path or set data.lm_text= (empty)")
        return str(p.resolve())
    for name in LM_TEXT_NAMES:
        if (root / name).is_file():
            return str((root / name).resolve())
    return ""


# -- the reader -----------------------------------------------------------------------------------
def read_corpus(root: Path, split_subsets: dict[str, tuple[str, ...]], *, sample_rate: int = 16000,
                extra_lexicon: str = "", oov_policy: str = "error", max_utts_per_split: int = 0,
                lm_text: str = "", min_samples: int = 1) -> Corpus:
    """Scan the subsets of ``root`` that make each split (``{"train": ("train-clean-100",), ...}``)
    and return their utterances with the account of what was skipped and why.

    Audio shorter than ``min_samples`` is skipped as ``too_short``; words missing from the lexicon
    (CMUdict plus ``extra_lexicon``) follow ``oov_policy``; ``max_utts_per_split`` (0: all) caps
    each split at a fixed random choice; ``lm_text`` names the LM training text (else one in the
    corpus root is used, :data:`LM_TEXT_NAMES`). With ``oov_policy="g2p"`` the summary counts the
    kept utterances with words missing from the lexicon (``g2p_utterances``) and the words (``g2p_words``)."""
    root = Path(root)
    if not root.is_dir():
        raise CorpusError(f"corpus root {root} does not exist; pass --data-root with a LibriSpeech-layout "
                          "directory, or leave it out to use the synthetic corpus")
    lm_path = locate_lm_text(root, lm_text)
    skips = {split: Skips() for split in split_subsets}
    splits: dict[str, list[Utterance]] = {}
    threads = check_threads()
    for split, subsets in split_subsets.items():
        utts: list[Utterance] = []
        for subset in subsets:
            utts.extend(scan_subset(root, subset, sample_rate, skips[split], min_samples, threads))
        splits[split] = utts
    return finish_corpus(root, split_subsets, splits, skips, extra_lexicon=extra_lexicon, oov_policy=oov_policy,
                         max_utts_per_split=max_utts_per_split, lm_path=lm_path, min_samples=min_samples)


def finish_corpus(root: Path, split_subsets: dict[str, tuple[str, ...]], splits: dict[str, list[Utterance]],
                  skips: dict[str, Skips], *, extra_lexicon: str, oov_policy: str, max_utts_per_split: int,
                  lm_path: str, min_samples: int) -> Corpus:
    """What every corpus reader (LibriSpeech, Kaldi, lhotse) ends with: the OOV policy (with
    ``g2p``, its counts in the summary), the caps, a split with nothing usable refused, and the summary."""
    lexicon = load_lexicon(extra_lexicon or None)
    splits = apply_oov_policy(splits, lexicon, oov_policy, skips)
    summary: dict[str, Any] = {"corpus_root": str(root.resolve()), "lm_text": lm_path, "min_samples": min_samples,
                               "splits": {}}
    words: set[str] = set()
    for split in split_subsets:
        found = len(splits[split])
        utts = cap_utterances(splits[split], max_utts_per_split, split)
        if not utts:
            raise CorpusError(f"split '{split}' ({', '.join(split_subsets[split])} under {root}) has no usable "
                              f"utterances; skipped: {dict(skips[split].counts) or 'none'}")
        splits[split] = utts
        words.update(w for u in utts for w in u.words)
        summary["splits"][split] = _split_summary(split_subsets[split], utts, found, skips[split])
        if oov_policy == "g2p":
            summary["splits"][split]["g2p_utterances"] = sum(bool(find_oov(u.words, lexicon)) for u in utts)
        _log_skips(split, skips[split])
    summary["vocabulary_size"] = len(words)
    if oov_policy == "g2p":
        summary["g2p_words"] = len(find_oov(words, lexicon))
    summary["skipped_total"] = sum(sum(s.counts.values()) for s in skips.values())
    return Corpus(splits, summary)


def _split_summary(subsets: tuple[str, ...], utts: list[Utterance], found: int, skips: Skips) -> dict[str, Any]:
    return {
        "subsets": list(subsets),
        "utterances": len(utts),
        "speakers": len({u.speaker for u in utts}),
        "hours": round(sum(u.duration for u in utts) / 3600, 4),
        "usable_before_cap": found,
        "skipped": skips.summary(),
    }


def _log_skips(split: str, skips: Skips) -> None:
    for reason, n in sorted(skips.counts.items()):
        log.warning("%s: skipped %d (%s), e.g. %s", split, n, reason, skips.examples[reason][0])
