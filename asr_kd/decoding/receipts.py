"""Receipts of the decode stage's finished work: a killed decode resumes.

Per system and split, ``decode/<system>/receipts/<split>.json`` holds the hypotheses at every
scale searched, the frame-accuracy counts and the times; while the split is under way, each finished
chunk of ``decode.chunk_utts`` utterances has its own receipt in ``decode/<system>/receipts/<split>/``
(removed once the split's receipt is written). Every receipt records its key, a hash of what the
result depends on: the model file(s) (SHA-256 of their bytes), the network's context and
precision, the graph (HCLG, words, transition model), the state priors, the search settings, the
scales, and each utterance's features and labels (:func:`utt_digests`). A receipt of another key
(a retrained model, a rebuilt graph, another scale: a forced or upstream-triggered re-run) is
searched again and overwritten; one of the same key is reused. Receipts outlive the finished
stage: a re-run after a kill, ``--force decode`` or an upstream re-run (a student retrained, the
graph rebuilt) searches only what changed. To search everything again (to re-time it), delete
``decode/*/receipts``.

Files are written atomically (:mod:`asr_kd.fileio`); an unreadable receipt is an error that names
the file.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from asr_kd.work import key as work_key
from asr_kd.decoding.search import Hypothesis
from asr_kd.fileio import file_sha256, read_json, write_json
from asr_kd.errors import InputError

log = logging.getLogger(__name__)

FORMAT = 1  # bump when a receipt's content or meaning changes


@dataclass
class SearchRecord:
    """What one search of utterances gave: hypotheses per scale (in utterance order), the
    frame-accuracy counts (utt -> (hits, frames)) and the forward seconds."""

    hyps: dict[float, list[Hypothesis]]
    utt_frames: dict[str, tuple[int, int]] = field(default_factory=dict)
    forward_s: float = 0.0

    def extend(self, other: SearchRecord) -> None:
        for s, hs in other.hyps.items():
            self.hyps.setdefault(s, []).extend(hs)
        self.utt_frames.update(other.utt_frames)
        self.forward_s += other.forward_s

    def to_json(self, key: str) -> dict[str, Any]:
        return {"format": FORMAT, "key": key, "forward_s": round(self.forward_s, 4),
                "utt_frames": {u: list(v) for u, v in self.utt_frames.items()},
                "hyps": {repr(float(s)): [[h.utt, h.words, h.ok, h.num_frames, round(h.search_s, 5)] for h in hs]
                         for s, hs in self.hyps.items()}}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> SearchRecord:
        hyps = {float(s): [Hypothesis(u, list(w), bool(ok), int(n), float(t)) for u, w, ok, n, t in hs]
                for s, hs in obj["hyps"].items()}
        return cls(hyps, {u: (int(a), int(b)) for u, (a, b) in obj["utt_frames"].items()}, float(obj["forward_s"]))


def utt_digests(utts: Sequence[str], *tables: Mapping[str, np.ndarray]) -> list[str]:
    """Per utterance, a hash of its id and its arrays in ``tables`` (features, labels): what the
    search of it depends on besides the model and graph."""
    out = []
    for u in utts:
        h = hashlib.sha256(u.encode())
        for table in tables:
            a = table.get(u)
            h.update(b"-" if a is None else np.ascontiguousarray(a).tobytes() + str(a.shape).encode())
        out.append(h.hexdigest()[:16])
    return out


_FILE_HASHES: dict[tuple[str, int, int], str] = {}


def file_key(path: Path) -> str:
    """The SHA-256 of a file (cached per path, size and mtime within this process)."""
    st = path.stat()
    k = (str(path), st.st_size, st.st_mtime_ns)
    if k not in _FILE_HASHES:
        _FILE_HASHES[k] = file_sha256(path)
    return _FILE_HASHES[k]


def array_key(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]


@dataclass
class Tally:
    """What a decode reused and searched, for its log line."""

    splits_reused: list[str] = field(default_factory=list)
    chunks_reused: dict[str, int] = field(default_factory=dict)  # system/split -> chunks
    chunks_searched: int = 0

    def line(self) -> str:
        chunks = sum(self.chunks_reused.values())
        where = ", ".join(f"{n} of {w}" for w, n in self.chunks_reused.items())
        return (f"decode: reused {len(self.splits_reused)} finished (system, split) results and {chunks} chunks"
                f"{' (' + where + ')' if where else ''}; searched {self.chunks_searched} chunks")


class SplitReceipts:
    """The receipts of one system's search of one split (see the module docstring)."""

    def __init__(self, root: Path, system: str, split: str, identity: Mapping[str, Any], digests: Sequence[str],
                 chunk_utts: int, tally: Tally | None = None) -> None:
        self.where = f"{system}/{split}"
        self.file = root / system / "receipts" / f"{split}.json"
        self.chunk_dir = root / system / "receipts" / split
        self.identity = dict(identity)
        self.key = work_key({"format": FORMAT, **self.identity, "utts": list(digests)})
        self.chunk_keys = [work_key({"format": FORMAT, **self.identity, "utts": list(digests[i : i + chunk_utts])})
                           for i in range(0, len(digests), chunk_utts)]
        self.tally = tally if tally is not None else Tally()

    def _read(self, path: Path, key: str) -> SearchRecord | None:
        if not path.exists():
            return None
        try:
            obj = read_json(path)
            if obj.get("key") != key or obj.get("format") != FORMAT:
                return None
            return SearchRecord.from_json(obj)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise InputError(f"{path}: unreadable decode receipt ({type(e).__name__}: {e}); delete it and re-run "
                             "the decode stage") from e

    def finished(self) -> SearchRecord | None:
        """The whole split's record when its receipt has this key."""
        rec = self._read(self.file, self.key)
        if rec is not None:
            self.tally.splits_reused.append(self.where)
            log.info("decode: %s: reusing its finished search (%s)", self.where, self.file.name)
        return rec

    def chunk(self, i: int) -> SearchRecord | None:
        rec = self._read(self.chunk_dir / f"chunk-{i:05d}.json", self.chunk_keys[i])
        if rec is not None:
            self.tally.chunks_reused[self.where] = self.tally.chunks_reused.get(self.where, 0) + 1
        return rec

    def write_chunk(self, i: int, rec: SearchRecord) -> None:
        write_json(self.chunk_dir / f"chunk-{i:05d}.json", rec.to_json(self.chunk_keys[i]))
        self.tally.chunks_searched += 1

    def write(self, rec: SearchRecord) -> None:
        """The split's receipt; its chunks' receipts are then no longer needed."""
        write_json(self.file, rec.to_json(self.key))
        shutil.rmtree(self.chunk_dir, ignore_errors=True)
