"""What decides a piece of work, and its key: the one way asr-kd tells finished work from work to do.

Every consumer of the config that stores results builds a small frozen dataclass of the values its
result depends on, and nothing else:

* each stage, its ``Work`` (``work(cfg)`` in its module under :mod:`asr_kd.stages`): hashed into
  its ``DONE.json`` marker;
* each training run (a teacher, a student, a Table-5 run: ``asr_kd.stages._training``), the stored
  soft targets (``asr_kd.nn.soft_targets``), the augmented copies (the prepare stage) and the
  decode stage's receipts: hashed into the key file beside their outputs.

:func:`record` turns such a slice into JSON; :func:`key` hashes the record. A config section put
in a slice whole loses its fields marked :data:`WHERE` (where or how fast the work runs: devices,
workers, chunk sizes; they never make work stale) and its fields marked :data:`ADDED` while they
hold their default (an option added after runs were made, at the value that keeps their work;
those runs stay done). Whatever stores a key stores its record beside it, so a refusal names the
values that changed.

Adding an option that changes results: its field in :mod:`asr_kd.config` (``metadata=ADDED``),
and the field in the slice of each consumer whose result it changes where that slice does not hold
the section whole.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

_ROLE = "asr_kd.work"
# field metadata of asr_kd.config: where or how fast the work runs, never what it computes
WHERE: Mapping[str, str] = MappingProxyType({_ROLE: "where"})
# an option added after runs were made; at its default, the work those runs did
ADDED: Mapping[str, str] = MappingProxyType({_ROLE: "added"})


def _default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def added_defaults(section: Any) -> dict[str, Any]:
    """A config section's :data:`ADDED` fields and the defaults that keep older runs' work."""
    return {f.name: _default(f) for f in dataclasses.fields(section) if f.metadata.get(_ROLE) == "added"}


def record(obj: Any) -> Any:
    """The JSON-ready record of a work slice (dataclasses recursively; tuples as lists), without
    :data:`WHERE` fields and without :data:`ADDED` fields at their default."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {}
        for f in dataclasses.fields(obj):
            value, role = getattr(obj, f.name), f.metadata.get(_ROLE)
            if role == "where" or (role == "added" and record(value) == record(_default(f))):
                continue
            out[f.name] = record(value)
        return out
    if isinstance(obj, (tuple, list)):
        return [record(v) for v in obj]
    if isinstance(obj, Mapping):
        return {str(k): record(v) for k, v in obj.items()}
    return obj


def hash_record(rec: Any) -> str:
    """A stable short hash of a JSON-ready value (sorted keys): 16 hex digits of its SHA-256."""
    blob = json.dumps(rec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def key(obj: Any) -> str:
    """The key of a work slice: the hash of its :func:`record`."""
    return hash_record(record(obj))


@dataclass(frozen=True)
class Keyed:
    """A piece of work's key and record, as its key file stores them; ``legacy``: the keys older
    asr-kd versions gave the same work (a run they finished is recognised, and re-keyed)."""

    key: str
    record: Any
    legacy: tuple[str, ...] = ()

    @classmethod
    def of(cls, work: Any, legacy: Sequence[str] = ()) -> Keyed:
        rec = record(work)
        own = hash_record(rec)
        return cls(own, rec, tuple(k for k in legacy if k != own))

    def stored(self) -> dict[str, Any]:
        """What a key file holds."""
        return {"key": self.key, "work": self.record}

    def matches(self, stored: Mapping[str, Any] | None) -> bool:
        """Whether a key file's contents name this work (in this version's key or a legacy one)."""
        return stored is not None and stored.get("key") in (self.key, *self.legacy)


def changed(before: Any, now: Any, prefix: str = "", name: Callable[[str], str] = str) -> list[str]:
    """The values two records differ in, as ``"name: old -> new"``: dotted names, passed through
    ``name`` (e.g. to the config key a user sets)."""
    if isinstance(before, Mapping) and isinstance(now, Mapping):
        out = []
        for k in sorted(set(before) | set(now)):
            out += changed(before.get(k), now.get(k), f"{prefix}{k}.", name)
        return out
    return [] if before == now else [f"{name(prefix.rstrip('.'))}: {before!r} -> {now!r}"]


def take(cls: type, *sources: Any, **values: Any) -> Any:
    """A slice ``cls`` with ``values``, its other fields read by name from ``sources`` (config
    sections; the first that has the name)."""
    for f in dataclasses.fields(cls):
        if f.name not in values:
            values[f.name] = next(getattr(s, f.name) for s in sources if hasattr(s, f.name))
    return cls(**values)


@dataclass(frozen=True)
class Nothing:
    """The slice of a stage whose outputs depend on the config only through its upstream stages."""

    @classmethod
    def of(cls, cfg: Any) -> Nothing:
        return cls()
