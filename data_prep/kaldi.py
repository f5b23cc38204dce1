"""The Kaldi data-dir reader: ``wav.scp``, ``text``, ``utt2spk`` (+ ``segments``) -> one manifest per split.

A corpus root holds data dirs (Kaldi's ``data/``: ``train_clean_100``, ``dev_clean`` ...), each
as Kaldi's recipes write it, sorted or not::

    wav.scp    103-1240-0000 /corpus/103-1240-0000.wav       a file soundfile reads (relative: to the cwd)
               103-1240-0001 flac -c -d -s /c/x.flac |       a command whose stdout is audio (any format)
               rec-7 /corpus/raw.ark:1234                    a WAV inside a Kaldi ark (read with kaldiio)
    text       103-1240-0000 CHAPTER ONE MISSUS RACHEL LYNDE IS SURPRISED
    utt2spk    103-1240-0000 103                             (or spk2utt: 103 103-1240-0000 103-1240-0001 ...)
    segments   103-1240-0000 rec-7 0.00 5.32                 optional: utterance, recording, start, end (s);
                                                             end -1 = to the end of the recording

Without ``segments`` a ``wav.scp`` key is an utterance id; with it, a recording id. A plain file at
the recipe's sample rate used whole is read in place, decoded whole as the LibriSpeech reader does
(:func:`data_prep.librispeech.check_audio`). Everything else (a pipe, a segment, an ark entry, a
file at another rate) is decoded once here and written as a 16 kHz WAV under the caller's
``audio_dir`` (:mod:`data_prep.audio`): counted per split as ``materialised``, and ``resampled``
when its rate differed. A recording is decoded once for all its segments.

Bad input is skipped and counted by reason, as in :mod:`data_prep.librispeech` (the same audio
reasons; ``file:line`` named for table lines), plus:

* ``bad_table_line`` (a ``wav.scp`` / ``utt2spk`` / ``segments`` line without a value, not UTF-8,
  or a segment whose times are not numbers or end before they start);
* ``missing_audio_file`` (a ``wav.scp`` path that does not exist), ``pipe_failed`` (a command that
  exits non-zero or prints nothing: the utterance, the command and its last stderr line named),
  ``segment_outside_audio`` (a segment that starts after its recording ends, or ends more than
  0.5 s after it, Kaldi's ``extract-segments --max-overshoot``; less is cut at the end);
* ``missing_recording`` (a segment whose recording is not in ``wav.scp``),
  ``recording_without_segments`` (a ``wav.scp`` recording that no segment uses),
  ``transcript_without_audio``, ``audio_without_transcript``, ``no_speaker`` (not in ``utt2spk``);
* ``not_mono``: Kaldi takes one channel; pick it in the command (``sox x.wav -t wav - remix 1 |``).

A command that the shell cannot find (exit 127) stops the reader with a :class:`CorpusError`: it
is a missing tool (``flac``, ``sox``), not bad input.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from asr_kd.data.manifest import Utterance
from asr_kd.parallel import worker_map
from asr_kd.progress import progress
from data_prep.audio import PipeError, decode_bytes, materialise, read_file, run_pipe
from data_prep.librispeech import (
    Corpus, CorpusError, Skips, check_audio, check_threads, finish_corpus, locate_lm_text, subset_dir,
)

log = logging.getLogger(__name__)

REQUIRED = ("wav.scp", "text")
MAX_OVERSHOOT_S = 0.5  # Kaldi extract-segments' default --max-overshoot
_ARK_OFFSET = re.compile(r"^\S+:\d+(\[[0-9:, ]+\])?$")  # foo.ark:1234, foo.ark:1234[0:16000]
COMMAND_NOT_FOUND = 127


# -- tables ---------------------------------------------------------------------------------------
def read_table(path: Path, skips: Skips, bad: set[str], empty_reason: str = "bad_table_line",
               encoding_reason: str = "bad_table_line") -> dict[str, tuple[str, str]]:
    """``key -> (value, "file:line")`` of a Kaldi table (``key value ...`` a line). A line without
    a value is ``empty_reason``, one that is not UTF-8 ``encoding_reason``, a repeated key
    ``duplicate_id`` (the first is kept); all counted and named in ``skips``, and the keys of
    skipped lines added to ``bad`` (so that they are not counted again, e.g. as without audio)."""
    table: dict[str, tuple[str, str]] = {}
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError:
                bad.add(raw.split(maxsplit=1)[0].decode("utf-8", "replace") if raw.strip() else "")
                skips.add(encoding_reason, where)
                continue
            if not line:
                continue
            key, value = (line.split(maxsplit=1) + [""])[:2]  # a space or a tab after the key
            if not value:
                bad.add(key)
                skips.add(empty_reason, where)
            elif key in table:
                skips.add("duplicate_id", f"{where} (also {table[key][1]})")
            else:
                table[key] = (value, where)
    return table


def read_speakers(d: Path, skips: Skips, bad: set[str]) -> dict[str, str]:
    """utterance -> speaker from ``utt2spk``, else from ``spk2utt``; a :class:`CorpusError` without either."""
    if (d / "utt2spk").is_file():
        return {u: v.split()[0] for u, (v, _) in read_table(d / "utt2spk", skips, bad).items()}
    if (d / "spk2utt").is_file():
        return {u: spk for spk, (v, _) in read_table(d / "spk2utt", skips, set()).items() for u in v.split()}
    raise CorpusError(f"Kaldi data dir {d} has neither utt2spk nor spk2utt; write utt2spk (lines 'UTT SPEAKER'; "
                      "one speaker per utterance is allowed: 'UTT UTT')")


@dataclass(frozen=True)
class Segment:
    utt: str
    recording: str
    start: float  # seconds
    end: float  # seconds; -1 = to the end
    where: str  # file:line


def read_segments(path: Path, skips: Skips, bad: set[str]) -> dict[str, Segment]:
    """utterance -> :class:`Segment` of a ``segments`` file; malformed lines are ``bad_table_line``
    (their utterances added to ``bad``)."""
    out: dict[str, Segment] = {}
    for utt, (value, where) in read_table(path, skips, bad).items():
        parts = value.split()
        try:
            rec, start, end = parts[0], float(parts[1]), float(parts[2])
            ok = len(parts) == 3 and start >= 0 and (end == -1 or end > start)
        except (IndexError, ValueError):
            ok = False
        if not ok:
            bad.add(utt)
            skips.add("bad_table_line", f"{where} (want: UTT RECORDING START END)")
            continue
        out[utt] = Segment(utt, rec, start, end, where)
    return out


# -- audio ----------------------------------------------------------------------------------------
@dataclass
class Job:
    """One wav.scp entry and the utterances cut from it (one, without segments)."""

    recording: str
    entry: str  # the wav.scp value
    utts: list[tuple[str, Segment | None]]  # (utterance id, its segment or None: the whole recording)


@dataclass
class Result:
    utts: list[Utterance] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (reason, name)
    materialised: int = 0
    resampled: int = 0


def load_entry(entry: str) -> tuple[np.ndarray, int]:
    """(samples (N, C) float32, rate) of one wav.scp value: a pipe, an ark offset or a file."""
    if entry.endswith("|"):
        return decode_bytes(run_pipe(entry[:-1].strip()))
    if _ARK_OFFSET.match(entry) and not Path(entry).exists():
        import kaldiio

        rate, data = kaldiio.load_mat(entry)  # a WAV in an ark: (N,) or (N, C) int16
        data = np.asarray(data)
        data = data[:, None] if data.ndim == 1 else data
        scale = 32768.0 if np.issubdtype(data.dtype, np.integer) else 1.0
        return (data / scale).astype(np.float32), int(rate)
    return read_file(entry)


def cut(samples: np.ndarray, rate: int, seg: Segment | None) -> np.ndarray | None:
    """The segment's samples (sample-exact: start and end rounded to the nearest sample), or None
    when it lies outside the recording (an overshoot up to MAX_OVERSHOOT_S is cut off)."""
    if seg is None:
        return samples
    start = round(seg.start * rate)
    end = len(samples) if seg.end == -1 else round(seg.end * rate)
    if end > len(samples) and end - len(samples) <= MAX_OVERSHOOT_S * rate:
        end = len(samples)
    if start >= len(samples) or end > len(samples):
        return None
    return samples[start:end]


def in_place(job: Job, sample_rate: int, min_samples: int) -> Result | None:
    """The Result of a whole-file entry at the recipe's rate, read where it is; None when the file
    must be decoded and rewritten (another rate, or not a plain file)."""
    utt, seg = job.utts[0]
    if job.entry.endswith("|") or seg is not None or not Path(job.entry).is_file():
        return None
    path = Path(job.entry).resolve()
    reason, frames = check_audio(path, sample_rate, min_samples)
    if reason == "wrong_sample_rate":
        return None
    res = Result()
    if reason:
        res.skipped.append((reason, f"{path} ({utt})"))
    else:
        res.utts.append(Utterance(id=utt, speaker="", chapter=job.recording, audio=str(path), text="",
                                  num_samples=frames, sample_rate=sample_rate))
    return res


def process(job: Job, audio_dir: Path, sample_rate: int, min_samples: int) -> Result:
    """The utterances of one wav.scp entry (speaker and text filled in by the caller)."""
    if not job.entry.endswith("|") and not _ARK_OFFSET.match(job.entry) and not Path(job.entry).exists():
        return Result(skipped=[("missing_audio_file", f"{job.entry} ({u})") for u, _ in job.utts])
    done = in_place(job, sample_rate, min_samples)
    if done is not None:
        return done
    res = Result()
    names = ", ".join(u for u, _ in job.utts[:3]) + (" ..." if len(job.utts) > 3 else "")
    try:
        samples, rate = load_entry(job.entry)
    except PipeError as e:
        if e.returncode == COMMAND_NOT_FOUND:
            raise CorpusError(f"wav.scp entry of {names}: {e}. Install the tool, or rewrite wav.scp") from e
        res.skipped = [("pipe_failed", f"{u}: {e}") for u, _ in job.utts]
        return res
    except Exception as e:  # noqa: BLE001 - any decoder or ark error: this entry's audio is unreadable
        res.skipped = [("unreadable_audio", f"{job.entry} ({u}): {e}") for u, _ in job.utts]
        return res
    if samples.shape[1] != 1:
        res.skipped = [("not_mono", f"{job.entry} ({u}): {samples.shape[1]} channels") for u, _ in job.utts]
        return res
    for utt, seg in job.utts:
        part = cut(samples[:, 0], rate, seg)
        if part is None:
            res.skipped.append(("segment_outside_audio",
                                f"{seg.where} ({utt}: {seg.start}-{seg.end} s of {len(samples) / rate:.2f} s)"))
            continue
        reason, n, path, resampled = materialise(part, rate, audio_dir, utt, sample_rate, min_samples)
        res.resampled += resampled
        if reason:
            res.skipped.append((reason, f"{job.entry} ({utt})"))
            continue
        res.materialised += 1
        res.utts.append(Utterance(id=utt, speaker="", chapter=job.recording, audio=path, text="",
                                  num_samples=n, sample_rate=sample_rate))
    return res


# -- one data dir ---------------------------------------------------------------------------------
@dataclass
class Plan:
    """What one split will read: the wav.scp entries to decode, with each utterance's text and speaker."""

    jobs: list[Job] = field(default_factory=list)
    texts: dict[str, str] = field(default_factory=dict)
    speakers: dict[str, str] = field(default_factory=dict)


def plan_data_dir(root: Path, name: str, plan: Plan, skips: Skips) -> None:
    """Add the data dir ``root/name`` to ``plan``: pair its tables, and count what does not pair up
    (and ids the split already has) in ``skips``."""
    d = subset_dir(root, name)
    for f in REQUIRED:
        if not (d / f).is_file():
            raise CorpusError(f"{d} is not a Kaldi data dir: it has no {f}. A data dir holds wav.scp, text and "
                              "utt2spk (segments optional), as Kaldi's utils/validate_data_dir.sh checks")
    lost: set[str] = set()  # utterances whose audio or speaker line is already counted as bad
    untranscribed: set[str] = set()  # utterances whose text line is already counted as bad
    wav = read_table(d / "wav.scp", skips, lost)
    texts = {u: " ".join(v.upper().split()) for u, (v, _) in read_table(
        d / "text", skips, untranscribed, empty_reason="empty_transcript",
        encoding_reason="non_utf8_transcript").items()}
    speakers = read_speakers(d, skips, lost)
    by_rec: dict[str, list[tuple[str, Segment | None]]] = defaultdict(list)
    if (d / "segments").is_file():
        for utt, seg in read_segments(d / "segments", skips, lost).items():
            if seg.recording in wav:
                by_rec[seg.recording].append((utt, seg))
            else:
                skips.add("missing_recording", f"{seg.where} ({seg.recording} is not in {d / 'wav.scp'})")
                lost.add(utt)
        for rec in sorted(set(wav) - set(by_rec)):
            skips.add("recording_without_segments", wav[rec][1])
    else:
        by_rec = defaultdict(list, {rec: [(rec, None)] for rec in wav})
    audio_ids = {u for utts in by_rec.values() for u, _ in utts}
    for utt in texts:
        if utt not in audio_ids and utt not in lost:
            skips.add("transcript_without_audio", f"{d / 'text'} ({utt})")
    for rec, utts in by_rec.items():
        keep = []
        for utt, seg in utts:
            if utt not in texts:
                if utt not in untranscribed:
                    skips.add("audio_without_transcript", f"{wav[rec][1]} ({utt})")
            elif utt in lost:
                pass  # its utt2spk line is bad: counted there
            elif utt not in speakers:
                skips.add("no_speaker", f"{d} ({utt} is not in utt2spk)")
            elif utt in plan.texts:
                skips.add("duplicate_id", f"{d} ({utt}: also in an earlier data dir of the split, which is kept)")
            else:
                keep.append((utt, seg))
                plan.texts[utt], plan.speakers[utt] = texts[utt], speakers[utt]
        if keep:
            plan.jobs.append(Job(rec, wav[rec][0], keep))


def read_split(root: Path, names: tuple[str, ...], audio_dir: Path, sample_rate: int, skips: Skips,
               min_samples: int, threads: int, counts: dict[str, int]) -> list[Utterance]:
    """The good utterances of the data dirs ``names`` (one split); what is lost counted in
    ``skips``, the audio written under ``audio_dir`` counted in ``counts``."""
    plan = Plan()
    for name in names:
        plan_data_dir(root, name, plan, skips)
    work = partial(process, audio_dir=audio_dir, sample_rate=sample_rate, min_samples=min_samples)
    utts: list[Utterance] = []
    results = worker_map(work, plan.jobs, threads, start="thread")
    for res in progress(results, total=len(plan.jobs), desc=f"reading {', '.join(names)}", unit="rec", leave=False):
        counts["materialised"] += res.materialised
        counts["resampled"] += res.resampled
        for reason, where in res.skipped:
            skips.add(reason, where)
        utts += [Utterance(id=u.id, speaker=plan.speakers[u.id], chapter=u.chapter, audio=u.audio,
                           text=plan.texts[u.id], num_samples=u.num_samples, sample_rate=u.sample_rate)
                 for u in res.utts]
    return utts


# -- the reader -----------------------------------------------------------------------------------
def read_kaldi_corpus(root: Path, split_dirs: dict[str, tuple[str, ...]], audio_dir: Path, *,
                      sample_rate: int = 16000, extra_lexicon: str = "", oov_policy: str = "error",
                      max_utts_per_split: int = 0, lm_text: str = "", min_samples: int = 1) -> Corpus:
    """Read the data dirs under ``root`` that make each split (``{"train": ("train",), ...}``; an
    absolute name is used as it is) into the manifest LibriSpeech's reader returns, with the same
    account. Audio that is not read in place is written under ``audio_dir/<split>/``."""
    root = Path(root)
    if not root.is_dir():
        raise CorpusError(f"corpus root {root} does not exist; pass --data-root with the directory that holds "
                          "your Kaldi data dirs (Kaldi's data/)")
    return corpus_from_splits(root, split_dirs, read_split, audio_dir, ("materialised", "resampled"),
                              sample_rate=sample_rate, extra_lexicon=extra_lexicon, oov_policy=oov_policy,
                              max_utts_per_split=max_utts_per_split, lm_text=lm_text, min_samples=min_samples)


def corpus_from_splits(root: Path, split_names: dict[str, tuple[str, ...]], read_split: Any, audio_dir: Path,
                       count_names: tuple[str, ...], *, sample_rate: int, extra_lexicon: str, oov_policy: str,
                       max_utts_per_split: int, lm_text: str, min_samples: int) -> Corpus:
    """The Kaldi and lhotse readers' common end: each split read by ``read_split(root, names,
    out_dir, sample_rate, skips, min_samples, threads, counts)`` with its own account and audio
    counts (``count_names``, from 0), then ``finish_corpus``, then the counts in each split's summary."""
    skips = {split: Skips() for split in split_names}
    splits: dict[str, list[Utterance]] = {}
    audio: dict[str, dict[str, int]] = {}
    threads = check_threads()
    for split, names in split_names.items():
        audio[split] = dict.fromkeys(count_names, 0)
        splits[split] = read_split(root, names, Path(audio_dir) / split, sample_rate, skips[split], min_samples,
                                   threads, audio[split])
    corpus = finish_corpus(root, split_names, splits, skips, extra_lexicon=extra_lexicon, oov_policy=oov_policy,
                           max_utts_per_split=max_utts_per_split, lm_path=locate_lm_text(root, lm_text),
                           min_samples=min_samples)
    add_audio_counts(corpus.summary, audio)
    return corpus


def add_audio_counts(summary: dict[str, Any], audio: dict[str, dict[str, int]]) -> None:
    """Put each split's counts of written (and resampled) audio in its summary, and log them."""
    for split, counts in audio.items():
        summary["splits"][split].update(counts)
        if counts.get("materialised"):
            log.info("%s: wrote %d utterance(s) of audio as 16-bit WAV (%d resampled)", split,
                     counts["materialised"], counts.get("resampled", 0))
