"""The lhotse reader: recordings + supervisions manifests, or a CutSet -> one manifest per split.

lhotse prepares 50+ public corpora as manifests (``lhotse prepare librispeech ...``); the files
of one part look like::

    <root>/librispeech_recordings_dev-clean.jsonl.gz     one Recording a line (sources, rate, channels)
    <root>/librispeech_supervisions_dev-clean.jsonl.gz   one SupervisionSegment a line (start, duration,
                                                          channel, text, speaker)
    <root>/librispeech_cuts_dev-clean.jsonl.gz           or a CutSet of the same

A split names parts (``data.train_subsets=train-clean-100``): the reader takes
``[<prefix>_]cuts_<part>.jsonl[.gz]`` when there is one, else ``[<prefix>_]recordings_<part>...``
with ``[<prefix>_]supervisions_<part>...``; a name that is a file under the root (a CutSet, or a
supervisions manifest beside its recordings manifest) is read as it is. Manifests are read through
the ``lhotse`` package (the optional extra ``asr-kd[lhotse]``), imported only when used (:func:`import_lhotse`).

**One utterance per supervision**, its id the supervision's id, its ``chapter`` the recording's id.
A CutSet is first cut at its supervisions (``trim_to_supervisions(keep_overlapping=False)``).
**Channels**: the supervision's channel is read; a supervision over several channels (a
microphone array) is downmixed to their mean and counted as ``downmixed``. Audio that is one
mono file at the recipe's sample rate, used whole, is read in place; any other (a segment, another
rate, several channels, a command, a URL, bytes in memory) is loaded by lhotse once and written as
a 16 kHz WAV under the caller's ``audio_dir`` (:mod:`data_prep.audio`), counted as
``materialised`` (and ``resampled``).

Bad input is skipped and counted by reason as in :mod:`data_prep.librispeech`, plus
``transcript_without_audio`` (a supervision whose recording is not in the recordings manifest),
``audio_without_transcript`` (a recording or cut without supervisions), ``empty_transcript``,
``no_speaker``, ``duplicate_id``, ``segment_outside_audio`` (a supervision that starts after its
recording ends or ends more than 0.5 s after it) and ``unreadable_audio`` (lhotse could not load it:
its error is named).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from asr_kd.data.manifest import Utterance
from asr_kd.parallel import worker_map
from asr_kd.progress import progress
from data_prep.audio import materialise
from data_prep.kaldi import MAX_OVERSHOOT_S, Result, corpus_from_splits
from data_prep.librispeech import Corpus, CorpusError, Skips, check_audio

MANIFEST = re.compile(r"^(?:.*_)?(recordings|supervisions|cuts)_(.+)\.jsonl(?:\.gz)?$")
INSTALL_HINT = "pip install 'asr-kd[lhotse]' (or: pip install -r requirements.lock)"


def import_lhotse():
    """The lhotse package, or a :class:`CorpusError` saying how to install it."""
    try:
        import lhotse
    except ImportError as e:
        raise CorpusError(f"data.format=lhotse needs the lhotse package, which is not installed ({e}): "
                          f"{INSTALL_HINT}") from e
    return lhotse


def manifests_in(root: Path) -> dict[str, dict[str, list[Path]]]:
    """part -> kind (recordings, supervisions, cuts) -> the manifest files of ``root`` named so."""
    out: dict[str, dict[str, list[Path]]] = {}
    for p in sorted(root.iterdir()):
        m = MANIFEST.match(p.name)
        if m and p.is_file():
            out.setdefault(m.group(2), {}).setdefault(m.group(1), []).append(p)
    return out


def is_lhotse_root(root: Path) -> bool:
    return bool(manifests_in(root))


def find_part(root: Path, part: str) -> tuple[str, list[Path]]:
    """("cuts", [file]) or ("recordings+supervisions", [recordings, supervisions]) for one part."""
    named = root / part
    if named.is_file():
        if "supervisions" in named.name:
            recs = named.with_name(named.name.replace("supervisions", "recordings"))
            if not recs.is_file():
                raise CorpusError(f"{named} is a supervisions manifest, but its recordings manifest {recs} is missing")
            return "recordings+supervisions", [recs, named]
        return "cuts", [named]
    have = manifests_in(root)
    kinds = have.get(part, {})
    for kind in ("cuts", "recordings", "supervisions"):
        if len(kinds.get(kind, [])) > 1:
            raise CorpusError(f"several {kind} manifests for part '{part}' in {root}: "
                              f"{', '.join(p.name for p in kinds[kind])}; name one file in data.*_subsets")
    if "cuts" in kinds:
        return "cuts", kinds["cuts"]
    if "recordings" in kinds and "supervisions" in kinds:
        return "recordings+supervisions", [kinds["recordings"][0], kinds["supervisions"][0]]
    listed = ", ".join(f"{p} ({', '.join(sorted(k))})" for p, k in sorted(have.items())) or "(none)"
    raise CorpusError(f"no lhotse manifests for part '{part}' in {root} (want cuts_{part}.jsonl.gz, or "
                      f"recordings_{part}.jsonl.gz + supervisions_{part}.jsonl.gz, any prefix); parts there: "
                      f"{listed}. Choose parts with --set data.train_subsets=... / data.dev_subsets=... / "
                      "data.test_subsets=...")


# -- items: one supervision each ------------------------------------------------------------------
@dataclass
class Item:
    """One supervision, and how to get its audio."""

    id: str
    speaker: str | None
    text: str | None
    recording: str
    load: Callable[[], tuple[np.ndarray, int]]  # () -> (samples (C, N) float32, rate)
    file: str | None  # a mono file at the item's rate that the supervision spans whole, else None
    rate: int


def in_place_file(rec: Any, start: float, num_samples: int) -> str | None:
    """The recording's file when it is one mono file, untransformed, and [start, num_samples) is all of it."""
    if len(rec.sources) != 1 or rec.sources[0].type != "file" or rec.num_channels != 1 or rec.transforms:
        return None
    if start != 0 or num_samples != rec.num_samples:
        return None
    return str(Path(rec.sources[0].source).resolve())


def supervision_items(recordings: Any, supervisions: Any, where: str, skips: Skips) -> list[Item]:
    """Items of a recordings + supervisions pair; what cannot pair up counted."""
    from lhotse.utils import compute_num_samples

    recs: dict[str, Any] = {}
    for r in recordings:
        if r.id in recs:
            skips.add("duplicate_id", f"{where}: recording {r.id}")
        recs.setdefault(r.id, r)
    items, used = [], set()
    for s in supervisions:
        rec = recs.get(s.recording_id)
        if rec is None:
            skips.add("transcript_without_audio", f"{where}: {s.id} (recording {s.recording_id} not in the recordings)")
            continue
        used.add(rec.id)
        if s.start >= rec.duration or s.end > rec.duration + MAX_OVERSHOOT_S:
            skips.add("segment_outside_audio", f"{where}: {s.id} ({s.start:.2f}-{s.end:.2f} s of {rec.duration:.2f} s)")
            continue
        duration = min(s.duration, rec.duration - s.start)
        n = compute_num_samples(duration, rec.sampling_rate)
        load = partial(rec.load_audio, channels=s.channel, offset=s.start, duration=duration)
        items.append(Item(s.id, s.speaker, s.text, rec.id, load, in_place_file(rec, s.start, n), rec.sampling_rate))
    for rid in recs:
        if rid not in used:
            skips.add("audio_without_transcript", f"{where}: recording {rid}")
    return items


def cut_items(cuts: Any, where: str, skips: Skips) -> list[Item]:
    """Items of a CutSet: every cut cut at its supervisions (one supervision each)."""
    from lhotse.cut import MonoCut

    items = []
    for cut in cuts:
        if not cut.supervisions:
            skips.add("audio_without_transcript", f"{where}: cut {cut.id}")
            continue
        for c in cut.trim_to_supervisions(keep_overlapping=False):
            s = c.supervisions[0]
            rec = getattr(c, "recording", None)
            file = in_place_file(rec, c.start, c.num_samples) if isinstance(c, MonoCut) and rec is not None else None
            items.append(Item(s.id, s.speaker, s.text, s.recording_id, c.load_audio, file, c.sampling_rate))
    return items


def read_items(root: Path, part: str, skips: Skips) -> list[Item]:
    lhotse = import_lhotse()
    kind, files = find_part(root, part)
    try:
        if kind == "cuts":
            return cut_items(lhotse.CutSet.from_file(files[0]), files[0].name, skips)
        recs, sups = lhotse.RecordingSet.from_file(files[0]), lhotse.SupervisionSet.from_file(files[1])
    except CorpusError:
        raise
    except Exception as e:  # noqa: BLE001 - lhotse's own parse errors: name the file
        raise CorpusError(f"{', '.join(map(str, files))}: not a lhotse {kind} manifest ({type(e).__name__}: {e})") from e
    return supervision_items(recs, sups, files[1].name, skips)


def process(item: Item, audio_dir: Path, sample_rate: int, min_samples: int) -> tuple[Result, int]:
    """(the item's Result, 1 if it was downmixed); speaker and text are filled in by the caller."""
    res = Result()
    if item.file is not None and item.rate == sample_rate:
        reason, frames = check_audio(Path(item.file), sample_rate, min_samples)
        if reason is None:
            res.utts.append(Utterance(id=item.id, speaker="", chapter=item.recording, audio=item.file, text="",
                                      num_samples=frames, sample_rate=sample_rate))
            return res, 0
        if reason not in ("wrong_sample_rate", "not_mono"):
            res.skipped.append((reason, f"{item.file} ({item.id})"))
            return res, 0
    try:
        samples, rate = item.load(), item.rate  # (C, N)
    except Exception as e:  # noqa: BLE001 - any lhotse loading error: this supervision's audio is unreadable
        res.skipped.append(("unreadable_audio", f"{item.id}: {type(e).__name__}: {e}"))
        return res, 0
    samples = np.atleast_2d(samples)
    downmixed = int(samples.shape[0] > 1)
    reason, n, path, resampled = materialise(samples.mean(axis=0), rate, audio_dir, item.id, sample_rate, min_samples)
    res.resampled += resampled
    if reason:
        res.skipped.append((reason, f"{item.id} ({item.recording})"))
        return res, downmixed
    res.materialised += 1
    res.utts.append(Utterance(id=item.id, speaker="", chapter=item.recording, audio=path, text="",
                              num_samples=n, sample_rate=sample_rate))
    return res, downmixed


def read_split(root: Path, parts: tuple[str, ...], audio_dir: Path, sample_rate: int, skips: Skips,
               min_samples: int, threads: int, counts: dict[str, int]) -> list[Utterance]:
    """The good utterances of the lhotse parts ``parts`` (one split); what is lost counted in
    ``skips``, the audio written under ``audio_dir`` counted in ``counts``."""
    items: dict[str, Item] = {}
    for part in parts:
        for it in read_items(root, part, skips):
            if not (it.text or "").strip():
                skips.add("empty_transcript", f"{part}: {it.id}")
            elif not it.speaker:
                skips.add("no_speaker", f"{part}: {it.id}")
            elif it.id in items:
                skips.add("duplicate_id", f"{part}: {it.id} (the first one is kept)")
            else:
                items[it.id] = it
    work = partial(process, audio_dir=audio_dir, sample_rate=sample_rate, min_samples=min_samples)
    utts: list[Utterance] = []
    results = worker_map(work, list(items.values()), threads, start="thread")
    for res, downmixed in progress(results, total=len(items), desc=f"reading {', '.join(parts)}", unit="utt",
                                   leave=False):
        counts["materialised"] += res.materialised
        counts["resampled"] += res.resampled
        counts["downmixed"] += downmixed
        for reason, where in res.skipped:
            skips.add(reason, where)
        for u in res.utts:
            it = items[u.id]
            utts.append(Utterance(id=u.id, speaker=str(it.speaker), chapter=u.chapter, audio=u.audio,
                                  text=" ".join(str(it.text).upper().split()), num_samples=u.num_samples,
                                  sample_rate=u.sample_rate))
    return utts


# -- the reader -----------------------------------------------------------------------------------
def read_lhotse_corpus(root: Path, split_parts: dict[str, tuple[str, ...]], audio_dir: Path, *,
                       sample_rate: int = 16000, extra_lexicon: str = "", oov_policy: str = "error",
                       max_utts_per_split: int = 0, lm_text: str = "", min_samples: int = 1) -> Corpus:
    """Read the lhotse parts under ``root`` that make each split (``{"train": ("train",), ...}``)
    into the manifest LibriSpeech's reader returns, with the same account. Audio that is not read
    in place is written under ``audio_dir/<split>/``."""
    root = Path(root)
    if not root.is_dir():
        raise CorpusError(f"corpus root {root} does not exist; pass --data-root with the directory that holds "
                          "your lhotse manifests")
    import_lhotse()
    return corpus_from_splits(root, split_parts, read_split, audio_dir, ("materialised", "resampled", "downmixed"),
                              sample_rate=sample_rate, extra_lexicon=extra_lexicon, oov_policy=oov_policy,
                              max_utts_per_split=max_utts_per_split, lm_text=lm_text, min_samples=min_samples)
