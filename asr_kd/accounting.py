"""The account of utterances lost between the corpus and the shards, per split, by stage and reason.

Every stage that can lose an utterance records its own losses in its summary, per split, in the
shape of the prepare stage's skips::

    "lost": {"counts": {"unreadable_audio": 2}, "examples": {"unreadable_audio": ["/data/.../x.flac: ..."]}}

(prepare: ``splits.<split>.skipped``; features, align, shards: ``splits.<split>.lost``). Each
utterance is counted once, by the first stage that lost it: align does not count what features
lost, shards does not count what features or align lost. :func:`loss_account` reads the markers
and assembles one account per split: its rows, what prepare listed, what the shards hold (what
training used), and whatever is unaccounted for (0 unless a stage drops something silently).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

from asr_kd.paths import SPLITS, RunPaths
from asr_kd.runner import marker_summary

MAX_EXAMPLES = 5  # names kept per reason (every loss is counted)
STAGES_AFTER_PREPARE = ("features", "align", "shards")


def tally(losses: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """``{"counts", "examples"}`` of (reason, name) pairs: every one counted, the first few named."""
    counts: Counter = Counter()
    examples: dict[str, list[str]] = defaultdict(list)
    for reason, name in losses:
        counts[reason] += 1
        if len(examples[reason]) < MAX_EXAMPLES:
            examples[reason].append(name)
    return {"counts": dict(sorted(counts.items())), "examples": {r: examples[r] for r in sorted(counts)}}


def _rows(stage: str, lost: dict[str, Any] | None) -> list[dict[str, Any]]:
    lost = lost or {}
    return [{"stage": stage, "reason": r, "count": n, "examples": lost.get("examples", {}).get(r, [])}
            for r, n in lost.get("counts", {}).items() if n]


def split_account(paths: RunPaths, split: str) -> dict[str, Any]:
    """One split: ``rows`` (stage, reason, count, examples), ``listed`` (prepare's manifest),
    ``used`` (the shards), ``unaccounted`` (listed - lost after prepare - used)."""
    prep = marker_summary(paths, "prepare").get("splits", {}).get(split, {})
    rows = _rows("prepare", prep.get("skipped"))
    after = []
    for stage in STAGES_AFTER_PREPARE:
        after += _rows(stage, marker_summary(paths, stage).get("splits", {}).get(split, {}).get("lost"))
    listed = prep.get("utterances")
    used = marker_summary(paths, "shards").get("splits", {}).get(split, {}).get("utterances")
    unaccounted = None
    if listed is not None and used is not None:
        unaccounted = listed - sum(r["count"] for r in after) - used
        if unaccounted:
            after.append({"stage": "(between prepare and shards)", "reason": "unaccounted", "count": unaccounted,
                          "examples": []})
    return {"rows": rows + after, "listed": listed, "used": used, "unaccounted": unaccounted}


def loss_account(paths: RunPaths) -> dict[str, dict[str, Any]]:
    """:func:`split_account` of every split."""
    return {split: split_account(paths, split) for split in SPLITS}
