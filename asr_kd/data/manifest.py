"""The standard manifest every corpus reader ends in: one JSON object per utterance per line.

A line looks like::

    {"id": "103-1240-0000", "speaker": "103", "chapter": "1240",
     "audio": "/data/LibriSpeech/train-clean-100/103/1240/103-1240-0000.flac",
     "text": "CHAPTER ONE MISSUS RACHEL LYNDE IS SURPRISED", "num_samples": 225360,
     "sample_rate": 16000}

``audio`` names the corpus's file by absolute path. Audio the prepare stage wrote itself (cut
from a longer recording, piped, resampled: ``prepare/audio/``) is named relative to the
manifest's directory, as scp files name their arks, so a run directory can be moved;
:func:`iter_manifest` returns it as an absolute path. ``chapter`` is LibriSpeech's chapter, or
the recording an utterance was cut from (Kaldi data dirs, lhotse manifests).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from asr_kd.fileio import atomic_open
from asr_kd.errors import InputError


@dataclass(frozen=True)
class Utterance:
    id: str
    speaker: str
    chapter: str
    audio: str
    text: str
    num_samples: int
    sample_rate: int

    @property
    def duration(self) -> float:
        return self.num_samples / self.sample_rate

    @property
    def words(self) -> list[str]:
        return self.text.split()


def write_manifest(path: str | os.PathLike, utts: Iterable[Utterance]) -> int:
    """Write utterances (sorted by id, as Kaldi sorts) atomically; returns how many. Audio under the
    manifest's directory is named relative to it."""
    rows = sorted(utts, key=lambda u: u.id)
    here = Path(path).resolve().parent
    with atomic_open(path, "w") as f:
        for u in rows:
            row = asdict(u)
            if Path(u.audio).is_absolute() and Path(u.audio).is_relative_to(here):
                row["audio"] = Path(u.audio).relative_to(here).as_posix()
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return len(rows)


def read_manifest(path: str | os.PathLike) -> list[Utterance]:
    return list(iter_manifest(path))


def iter_manifest(path: str | os.PathLike) -> Iterator[Utterance]:
    """The utterances of a manifest; relative audio names resolved against its directory."""
    here = Path(path).resolve().parent
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if isinstance(row, dict) and not os.path.isabs(row.get("audio", "/")):
                    row["audio"] = str(here / row["audio"])
                yield Utterance(**row)
            except (json.JSONDecodeError, TypeError) as e:
                raise InputError(f"{path}:{lineno}: not a manifest line ({e}); re-run the prepare stage") from e
