"""Kaldi-style state tying: decision trees that cluster triphone HMM states into tied pdfs.

This module owns the whole path from monophone alignments to a context-dependency object that
kaldi-hmm-gmm can use for training graphs, alignment, HCLG and decoding:

1. **Statistics** (:func:`accumulate_tree_stats`): per (left phone, centre phone, right phone,
   pdf-class) single-Gaussian sufficient statistics (count, sum, sum of squares) of the GMM
   features, as Kaldi's ``acc-tree-stats``. Phone contexts come from the alignment's own phone
   sequence; the utterance edges are phone 0, as in Kaldi.
2. **Questions** (:func:`cluster_phones`, :func:`table_questions`): phone sets to ask about the
   left/right context. Derived automatically by agglomerative clustering of phones by the
   likelihood of their pooled statistics (the role of Kaldi's ``cluster-phones``) and/or taken
   from a table of ARPAbet phonetic classes.
3. **Clustering** (:func:`build_tree`): one root per phone (position variants share it), all
   pdf-classes of a phone in one root and questions about the pdf-class allowed (Kaldi's
   ``roots.txt`` ``shared split``); silence roots are not split on context (one leaf per
   pdf-class). Greedy splitting of the leaf with the largest log-likelihood gain of a diagonal
   single Gaussian, a minimum count per side, stop at a target number of leaves; then leaves of
   the same root whose merge loses little likelihood are merged (as ``build-tree``'s
   ``--cluster-thresh``).
4. **Kaldi format** (:func:`tree_to_bytes`, :func:`write_tree`, :func:`read_tree`,
   :func:`tree_to_context_dependency`): the tree is written in Kaldi's binary ``tree`` format
   (``ContextDependency`` with N=3, P=1 and an EventMap of ``TE``/``SE``/``CE`` nodes).
   kaldi-hmm-gmm's ``ContextDependency`` has no reader, but unpickles from exactly these bytes
   (``__setstate__``), so the object used for graphs and decoding is Kaldi's own.

Event keys follow Kaldi: 0 = left phone, 1 = centre phone, 2 = right phone, -1 = pdf-class.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from asr_kd.fileio import atomic_open
from asr_kd.progress import progress

log = logging.getLogger(__name__)

KEY_LEFT, KEY_CENTRE, KEY_RIGHT, KEY_PDF_CLASS = 0, 1, 2, -1
CONTEXT_WIDTH, CENTRAL_POSITION = 3, 1
BINARY_HEADER = b"\0B"
_LOG_2PI = math.log(2.0 * math.pi)
# Column of each event key in TreeStats.keys (left, centre, right, pdf-class).
_KEY_COLUMN = {KEY_LEFT: 0, KEY_CENTRE: 1, KEY_RIGHT: 2, KEY_PDF_CLASS: 3}


class TreeFormatError(ValueError):
    """A tree file that is not a Kaldi binary ContextDependency we can read."""


# ------------------------------------------------------------------------------------------------
# Statistics
# ------------------------------------------------------------------------------------------------
@dataclass
class TreeStats:
    """Single-Gaussian statistics per (left, centre, right, pdf-class) event.

    keys: (M, 4) int32, count: (M,) float64, sum and sumsq: (M, D) float64; keys are unique.
    """

    keys: np.ndarray
    count: np.ndarray
    sum: np.ndarray
    sumsq: np.ndarray

    @property
    def dim(self) -> int:
        return int(self.sum.shape[1])

    @property
    def num_frames(self) -> float:
        return float(self.count.sum())

    def __len__(self) -> int:
        return int(self.keys.shape[0])

    def save(self, path: str | Path) -> None:
        with atomic_open(path, "wb") as f:
            np.savez(f, keys=self.keys, count=self.count, sum=self.sum, sumsq=self.sumsq)

    @classmethod
    def load(cls, path: str | Path) -> TreeStats:
        with np.load(path) as z:
            return cls(keys=z["keys"], count=z["count"], sum=z["sum"], sumsq=z["sumsq"])


def _reduce_by_code(
    codes: np.ndarray, count: np.ndarray, sums: np.ndarray, sumsq: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sum rows that share an int64 code. codes (N,), count (N,), sums/sumsq (N, D)."""
    order = np.argsort(codes, kind="stable")
    sorted_codes = codes[order]
    uniq, starts = np.unique(sorted_codes, return_index=True)
    return (
        uniq,
        np.add.reduceat(count[order], starts),
        np.add.reduceat(sums[order], starts, axis=0),
        np.add.reduceat(sumsq[order], starts, axis=0),
    )


@dataclass(frozen=True)
class TransitionTable:
    """Per transition-id lookups (index 0 unused): phone, pdf-class, and whether it ends the phone."""

    phone: np.ndarray  # (num_tids + 1,) int32
    pdf_class: np.ndarray  # (num_tids + 1,) int32
    is_final: np.ndarray  # (num_tids + 1,) bool
    hmm_state: np.ndarray  # (num_tids + 1,) int32
    trans_index: np.ndarray  # (num_tids + 1,) int32: which of its HMM state's transitions
    trans_state: np.ndarray  # (num_tids + 1,) int32: transition state (1-based; 0 for index 0)
    is_self_loop: np.ndarray  # (num_tids + 1,) bool


def transition_table(trans_model: Any) -> TransitionTable:
    """Map every transition id of ``trans_model`` to its phone and pdf-class.

    The (phone, HMM state, forward pdf, self-loop pdf) tuple of each transition state comes from
    the tuple's pickle state; the pdf-class is the topology's self-loop pdf-class for a self-loop
    and its forward pdf-class otherwise (Kaldi's ``TransitionIdToPdfClass``).
    """
    topo = trans_model.topo
    n_tids = int(trans_model.num_transition_ids)
    first_tid = list(trans_model.state2id)  # (num_states + 2,): first transition id of each state
    phone = np.zeros(n_tids + 1, np.int32)
    pdf_class = np.full(n_tids + 1, -1, np.int32)
    is_final = np.zeros(n_tids + 1, bool)
    hmm_of = np.zeros(n_tids + 1, np.int32)
    index = np.zeros(n_tids + 1, np.int32)
    state_of = np.zeros(n_tids + 1, np.int32)
    self_loop = np.zeros(n_tids + 1, bool)
    entries: dict[int, Any] = {}
    for s, tup in enumerate(trans_model.tuples, start=1):
        p, hmm_state = tup.__getstate__()[:2]
        entry = entries.setdefault(p, topo.topology_for_phone(p))
        for tid in range(first_tid[s], first_tid[s + 1]):
            phone[tid], hmm_of[tid], index[tid], state_of[tid] = p, hmm_state, tid - first_tid[s], s
            loop = self_loop[tid] = trans_model.is_self_loop(tid)
            pdf_class[tid] = entry[hmm_state].self_loop_pdf_class if loop else entry[hmm_state].forward_pdf_class
            is_final[tid] = trans_model.is_final(tid)
    return TransitionTable(phone=phone, pdf_class=pdf_class, is_final=is_final, hmm_state=hmm_of,
                           trans_index=index, trans_state=state_of, is_self_loop=self_loop)


def phone_ends(ali: np.ndarray, table: TransitionTable) -> np.ndarray:
    """(T,) bool: frame t is the last frame of a phone instance (Kaldi's ``SplitToPhones``).

    A phone ends with the transition into its HMM's final state; in a *reordered* alignment (the
    default of Kaldi's graph compilers, and what kaldi-hmm-gmm's aligner returns) self-loops of
    that last state follow it, and the phone ends after them.
    """
    tids = ali  # (T,)
    # frame t continues the run of frame t-1: a self-loop of the same transition state
    cont = np.zeros(len(tids), bool)
    cont[1:] = table.is_self_loop[tids[1:]] & (table.trans_state[tids[1:]] == table.trans_state[tids[:-1]])
    anchor = np.maximum.accumulate(np.where(cont, 0, np.arange(len(tids))))  # (T,) last frame <= t not continuing
    closed = table.is_final[tids[anchor]]  # (T,) the run that frame t belongs to left the HMM
    ends = np.zeros(len(tids), bool)
    ends[:-1] = closed[:-1] & ~cont[1:]
    ends[-1] = closed[-1]
    return ends


def phone_contexts(ali: np.ndarray, table: TransitionTable) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """Per-frame (left, centre, right) phones of a transition-id alignment, and whether it ends cleanly.

    Phone instances are split by :func:`phone_ends`; the neighbours of the first and last phone
    are 0. ali: (T,) -> three (T,) arrays.
    """
    centre = table.phone[ali]  # (T,)
    ends = phone_ends(ali, table)  # (T,)
    seg = np.concatenate([[0], np.cumsum(ends[:-1])])  # (T,) phone-instance index of each frame
    starts = np.concatenate([[0], np.flatnonzero(ends[:-1]) + 1])  # (S,)
    seg_phone = centre[starts]  # (S,)
    left = np.concatenate([[0], seg_phone[:-1]])[seg]
    right = np.concatenate([seg_phone[1:], [0]])[seg]
    return left.astype(np.int32), centre.astype(np.int32), right.astype(np.int32), bool(ends[-1])


class TreeStatsAccumulator:
    """Accumulates :class:`TreeStats` over utterances; buffers frames and reduces them in batches."""

    def __init__(self, table: TransitionTable, flush_frames: int = 200_000) -> None:
        self.table = table
        self.flush_frames = flush_frames
        self.num_phones = int(table.phone.max()) + 1
        self.num_classes = int(table.pdf_class.max()) + 1
        self.num_utts = 0
        self.num_unfinished = 0  # alignments whose last frame does not end a phone
        self._codes: list[np.ndarray] = []
        self._feats: list[np.ndarray] = []
        self._buffered = 0
        self._acc: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None

    def _encode(self, left: np.ndarray, centre: np.ndarray, right: np.ndarray, cls: np.ndarray) -> np.ndarray:
        p, c = self.num_phones, self.num_classes
        return ((left.astype(np.int64) * p + centre) * p + right) * c + cls

    def add(self, feats: np.ndarray, ali: np.ndarray) -> None:
        """feats: (T, D) GMM features, ali: (T,) transition ids of the same utterance."""
        ali = np.asarray(ali, dtype=np.int64)
        if feats.shape[0] != ali.shape[0]:
            raise ValueError(f"{feats.shape[0]} feature frames but {ali.shape[0]} alignment frames")
        if ali.size == 0:
            return
        left, centre, right, clean = phone_contexts(ali, self.table)
        self.num_unfinished += not clean
        self.num_utts += 1
        self._codes.append(self._encode(left, centre, right, self.table.pdf_class[ali]))
        self._feats.append(np.asarray(feats, dtype=np.float64))
        self._buffered += ali.size
        if self._buffered >= self.flush_frames:
            self._flush()

    def _flush(self) -> None:
        if not self._codes:
            return
        codes = np.concatenate(self._codes)  # (N,)
        x = np.concatenate(self._feats)  # (N, D)
        parts = [(codes, np.ones(len(codes)), x, x * x)]
        if self._acc is not None:
            parts.append(self._acc)
        self._acc = _reduce_by_code(*(np.concatenate(col) for col in zip(*parts)))
        self._codes, self._feats, self._buffered = [], [], 0

    def stats(self) -> TreeStats:
        self._flush()
        if self._acc is None:
            raise ValueError("no frames were accumulated for the tree statistics")
        codes, count, sums, sumsq = self._acc
        p, c = self.num_phones, self.num_classes
        keys = np.stack([codes // (c * p * p), codes // (c * p) % p, codes // c % p, codes % c], axis=1)
        return TreeStats(keys=keys.astype(np.int32), count=count, sum=sums, sumsq=sumsq)


def accumulate_tree_stats(
    utterances: Iterable[tuple[np.ndarray, np.ndarray]], table: TransitionTable
) -> TreeStats:
    """Tree statistics of (features (T, D), transition-id alignment (T,)) pairs."""
    acc = TreeStatsAccumulator(table)
    for feats, ali in utterances:
        acc.add(feats, ali)
    if acc.num_unfinished:
        log.warning("%d of %d alignments do not end at a phone boundary", acc.num_unfinished, acc.num_utts)
    return acc.stats()


# ------------------------------------------------------------------------------------------------
# Gaussian log-likelihood
# ------------------------------------------------------------------------------------------------
def gaussian_objf(count: np.ndarray, sums: np.ndarray, sumsq: np.ndarray, var_floor: float) -> np.ndarray:
    """Log-likelihood of the data under its own ML diagonal Gaussian (variances floored).

    count: (...,), sums/sumsq: (..., D) -> (...,). Zero count gives 0.
    -0.5 * n * (D log 2pi + sum_d log var_d + D), with var_d = max(E[x_d^2] - E[x_d]^2, floor);
    the last term is exact when no variance is floored, as in Kaldi's GaussClusterable.
    """
    count = np.asarray(count, dtype=np.float64)
    n = np.where(count > 0, count, 1.0)[..., None]
    mean = sums / n
    var = np.maximum(sumsq / n - mean * mean, var_floor)
    dim = sums.shape[-1]
    objf = -0.5 * count * (np.log(var).sum(-1) + dim * (1.0 + _LOG_2PI))
    return np.where(count > 0, objf, 0.0)


# ------------------------------------------------------------------------------------------------
# Questions
# ------------------------------------------------------------------------------------------------
# Broad ARPAbet classes (no stress); position-dependent phones (AA_B ...) match by base name.
PHONETIC_CLASSES: dict[str, tuple[str, ...]] = {
    "vowel": ("AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW"),
    "front_vowel": ("AE", "EH", "EY", "IH", "IY"),
    "back_vowel": ("AA", "AO", "OW", "UH", "UW"),
    "central_vowel": ("AH", "ER"),
    "diphthong": ("AW", "AY", "EY", "OW", "OY"),
    "rounded": ("AO", "OW", "OY", "UH", "UW", "W"),
    "high_vowel": ("IH", "IY", "UH", "UW"),
    "low_vowel": ("AA", "AE", "AO", "AW", "AY"),
    "stop": ("B", "D", "G", "K", "P", "T"),
    "voiced_stop": ("B", "D", "G"),
    "unvoiced_stop": ("K", "P", "T"),
    "affricate": ("CH", "JH"),
    "fricative": ("DH", "F", "HH", "S", "SH", "TH", "V", "Z", "ZH"),
    "voiced_fricative": ("DH", "V", "Z", "ZH"),
    "unvoiced_fricative": ("F", "HH", "S", "SH", "TH"),
    "sibilant": ("CH", "JH", "S", "SH", "Z", "ZH"),
    "nasal": ("M", "N", "NG"),
    "liquid": ("L", "R"),
    "glide": ("W", "Y"),
    "approximant": ("ER", "L", "R", "W", "Y"),
    "labial": ("B", "F", "M", "P", "V", "W"),
    "dental": ("DH", "TH"),
    "alveolar": ("D", "L", "N", "R", "S", "T", "Z"),
    "postalveolar": ("CH", "JH", "SH", "Y", "ZH"),
    "velar": ("G", "K", "NG"),
    "obstruent": ("B", "CH", "D", "DH", "F", "G", "HH", "JH", "K", "P", "S", "SH", "T", "TH", "V", "Z", "ZH"),
    "voiced_consonant": ("B", "D", "DH", "G", "JH", "L", "M", "N", "NG", "R", "V", "W", "Y", "Z", "ZH"),
}


def base_phone(symbol: str) -> str:
    """``AA_B`` -> ``AA``; other symbols unchanged."""
    for suffix in ("_B", "_I", "_E", "_S"):
        if symbol.endswith(suffix):
            return symbol[: -len(suffix)]
    return symbol


def phone_groups(phone_symbols: Mapping[int, str], phones: Iterable[int]) -> list[tuple[int, ...]]:
    """Group phone ids by base phone (word-position variants together), in order of first id."""
    groups: dict[str, list[int]] = {}
    for p in sorted(phones):
        groups.setdefault(base_phone(phone_symbols[p]), []).append(p)
    return [tuple(g) for g in groups.values()]


def table_questions(phone_symbols: Mapping[int, str], phones: Iterable[int]) -> list[tuple[int, ...]]:
    """Phone-id sets of :data:`PHONETIC_CLASSES` among ``phones`` (empty classes dropped)."""
    phones = sorted(phones)
    out = []
    for members in PHONETIC_CLASSES.values():
        ids = tuple(p for p in phones if base_phone(phone_symbols[p]) in members)
        if ids:
            out.append(ids)
    return out


def position_questions(phone_symbols: Mapping[int, str], phones: Iterable[int]) -> list[tuple[int, ...]]:
    """With word-position-dependent phones: the set of all ``_B`` phones, all ``_E`` phones, etc.

    Asked about the centre phone they tell the position variants of a root apart; asked about a
    neighbour they tell whether a word boundary lies between (as Kaldi's ``extra_questions.txt``).
    """
    phones = sorted(phones)
    out = []
    for suffix in ("_B", "_I", "_E", "_S"):
        ids = tuple(p for p in phones if phone_symbols[p].endswith(suffix))
        if ids:
            out.append(ids)
    return out


def _group_stats(
    stats: TreeStats, groups: Sequence[tuple[int, ...]], pdf_classes: Sequence[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pooled stats of each phone group (as centre phone), over the given pdf-classes. -> (G,), (G, D), (G, D)."""
    group_of = np.full(int(stats.keys[:, 1].max()) + 1, -1, np.int64)
    for g, members in enumerate(groups):
        group_of[[p for p in members if p < len(group_of)]] = g
    sel = np.isin(stats.keys[:, 3], pdf_classes)
    g = group_of[stats.keys[sel, 1]]
    keep = g >= 0
    n_groups = len(groups)
    count = np.bincount(g[keep], weights=stats.count[sel][keep], minlength=n_groups)
    sums = np.zeros((n_groups, stats.dim))
    sumsq = np.zeros((n_groups, stats.dim))
    np.add.at(sums, g[keep], stats.sum[sel][keep])
    np.add.at(sumsq, g[keep], stats.sumsq[sel][keep])
    return count, sums, sumsq


def cluster_phones(
    stats: TreeStats,
    groups: Sequence[tuple[int, ...]],
    pdf_classes: Sequence[int] = (1,),
    var_floor: float = 0.01,
) -> list[tuple[int, ...]]:
    """Phone sets from agglomerative clustering of phone groups by their pooled Gaussian statistics.

    Each group starts as a cluster; the two clusters whose merge loses the least log-likelihood
    are merged until one is left. Every cluster ever formed (singletons, merges, the whole set) is
    a question. Groups without data join at the end, one by one. The statistics are those of the
    phones as centre phones, pooled over ``pdf_classes`` (Kaldi's cluster-phones uses the middle
    state, pdf-class 1).
    """
    count, sums, sumsq = _group_stats(stats, groups, pdf_classes)
    clusters: list[tuple[int, ...]] = [tuple(g) for g in groups]
    c_count, c_sum, c_sumsq = list(count), list(sums), list(sumsq)
    questions = list(clusters)
    alive = list(range(len(clusters)))
    while len(alive) > 1:
        best = None
        for i_pos, i in enumerate(alive):
            for j in alive[i_pos + 1 :]:
                loss = _merge_loss(c_count, c_sum, c_sumsq, i, j, var_floor)
                if best is None or loss < best[0]:
                    best = (loss, i, j)
        _, i, j = best
        clusters.append(tuple(sorted(clusters[i] + clusters[j])))
        c_count.append(c_count[i] + c_count[j])
        c_sum.append(c_sum[i] + c_sum[j])
        c_sumsq.append(c_sumsq[i] + c_sumsq[j])
        alive = [a for a in alive if a not in (i, j)] + [len(clusters) - 1]
        questions.append(clusters[-1])
    return questions


def _merge_loss(count: list, sums: list, sumsq: list, i: int, j: int, var_floor: float) -> float:
    if count[i] <= 0 or count[j] <= 0:  # an empty cluster merges last, at no measured cost
        return math.inf if count[i] + count[j] > 0 else 0.0
    pair = [i, j]
    separate = gaussian_objf(np.array([count[k] for k in pair]), np.stack([sums[k] for k in pair]),
                             np.stack([sumsq[k] for k in pair]), var_floor)
    joint = gaussian_objf(np.array(count[i] + count[j]), sums[i] + sums[j], sumsq[i] + sumsq[j], var_floor)
    return float(separate.sum() - joint)


@dataclass(frozen=True)
class Questions:
    """Sets of values to ask about: phone sets for the left/right context, pdf-class sets."""

    phone_sets: tuple[tuple[int, ...], ...]
    pdf_class_sets: tuple[tuple[int, ...], ...]


def pdf_class_questions(max_classes: int) -> list[tuple[int, ...]]:
    """Contiguous ranges of pdf-classes: the groupings that make sense for left-to-right HMMs."""
    ranges = [(a, b) for a in range(max_classes) for b in range(a + 1, max_classes + 1)]
    return [tuple(range(a, b)) for a, b in ranges if b - a < max_classes]


def make_questions(
    stats: TreeStats,
    phone_symbols: Mapping[int, str],
    phones: Sequence[int],
    max_pdf_classes: int,
    source: str = "both",
    var_floor: float = 0.01,
) -> Questions:
    """Questions from automatic phone clustering (``auto``), the phonetic table (``table``), or ``both``."""
    if source not in ("auto", "table", "both"):
        raise ValueError(f"question source must be auto, table or both; got {source!r}")
    sets: list[tuple[int, ...]] = []
    groups = phone_groups(phone_symbols, phones)
    if source in ("auto", "both"):
        sets += cluster_phones(stats, groups, var_floor=var_floor)
    if source in ("table", "both"):
        sets += table_questions(phone_symbols, phones)
        sets += groups
    sets += position_questions(phone_symbols, phones)
    unique = sorted({tuple(sorted(s)) for s in sets}, key=lambda s: (len(s), s))
    return Questions(phone_sets=tuple(unique), pdf_class_sets=tuple(pdf_class_questions(max_pdf_classes)))


# ------------------------------------------------------------------------------------------------
# The tree
# ------------------------------------------------------------------------------------------------
@dataclass
class Leaf:
    pdf: int


@dataclass
class Split:
    """Kaldi's SplitEventMap: ``yes`` if the event's value for ``key`` is in ``yes_set``."""

    key: int
    yes_set: frozenset[int]
    yes: Node
    no: Node


@dataclass
class Table:
    """Kaldi's TableEventMap: ``children[value]`` for the event's value of ``key`` (None = no answer)."""

    key: int
    children: list[Node | None]


Node = Leaf | Split | Table


@dataclass(frozen=True)
class Root:
    """A tree root: the centre phones that share it; ``split=False`` = one leaf per pdf-class, no context."""

    phones: tuple[int, ...]
    num_pdf_classes: int
    split: bool = True


@dataclass
class Tree:
    """A context-dependency tree (N=3, P=1) whose top node is a Table on the centre phone."""

    root: Table
    num_pdfs: int
    info: dict[str, Any] = field(default_factory=dict)  # build numbers (leaves, gains, merges)
    context_width: int = CONTEXT_WIDTH  # 1 (P=0) only for monophone trees read from Kaldi files
    central_position: int = CENTRAL_POSITION

    def compute(self, left: int, centre: int, right: int, pdf_class: int) -> int:
        """The pdf of a triphone's pdf-class; KeyError where the tree has no answer.

        A monophone tree (context width 1) ignores ``left`` and ``right``.
        """
        if self.context_width == 1:
            event = {0: centre, KEY_PDF_CLASS: pdf_class}
        else:
            event = {KEY_LEFT: left, KEY_CENTRE: centre, KEY_RIGHT: right, KEY_PDF_CLASS: pdf_class}
        node: Node | None = self.root
        while True:
            if isinstance(node, Leaf):
                return node.pdf
            if isinstance(node, Split):
                node = node.yes if event[node.key] in node.yes_set else node.no
            elif isinstance(node, Table):
                value = event[node.key]
                node = node.children[value] if 0 <= value < len(node.children) else None
            if node is None:
                raise KeyError(f"no pdf for (left={left}, centre={centre}, right={right}, pdf-class={pdf_class})")

    def compute_many(self, keys: np.ndarray) -> np.ndarray:
        """Vectorised :meth:`compute`: keys (N, 4) rows of (left, centre, right, pdf-class) -> (N,) pdfs."""
        keys = np.asarray(keys)
        columns = {0: 1, KEY_PDF_CLASS: 3} if self.context_width == 1 else _KEY_COLUMN
        out = np.full(len(keys), -1, np.int64)
        _assign(self.root, keys, np.arange(len(keys)), columns, out)
        return out

    def num_leaves(self) -> int:
        return sum(1 for _ in _iter_leaves(self.root))


def _assign(node: Node | None, keys: np.ndarray, idx: np.ndarray, columns: dict[int, int], out: np.ndarray) -> None:
    """Write the pdf of each row ``keys[idx]`` under ``node`` into ``out[idx]``."""
    if idx.size == 0:
        return
    if node is None:
        raise KeyError(f"no pdf for event {keys[idx[0]].tolist()} (left, centre, right, pdf-class)")
    if isinstance(node, Leaf):
        out[idx] = node.pdf
        return
    values = keys[idx, columns[node.key]]
    if isinstance(node, Split):
        yes = np.isin(values, list(node.yes_set))
        _assign(node.yes, keys, idx[yes], columns, out)
        _assign(node.no, keys, idx[~yes], columns, out)
        return
    for v in np.unique(values):
        child = node.children[v] if 0 <= v < len(node.children) else None
        _assign(child, keys, idx[values == v], columns, out)


def _iter_leaves(node: Node | None) -> Iterable[Leaf]:
    if isinstance(node, Leaf):
        yield node
    elif isinstance(node, Split):
        yield from _iter_leaves(node.yes)
        yield from _iter_leaves(node.no)
    elif isinstance(node, Table):
        for child in node.children:
            yield from _iter_leaves(child)


def default_roots(
    phone_symbols: Mapping[int, str],
    nonsilence_phones: Sequence[int],
    silence_phones: Sequence[int],
    phone_to_num_pdf_classes: Sequence[int],
) -> list[Root]:
    """One shared, split root per base phone; silence phones one root, not split on context."""
    roots = []
    if silence_phones:
        roots.append(Root(tuple(silence_phones), phone_to_num_pdf_classes[silence_phones[0]], split=False))
    for group in phone_groups(phone_symbols, nonsilence_phones):
        counts = {phone_to_num_pdf_classes[p] for p in group}
        if len(counts) != 1:
            raise ValueError(f"phones {group} share a root but differ in number of pdf-classes")
        roots.append(Root(group, counts.pop(), split=True))
    return roots


@dataclass
class _Growing:
    """A node while the tree grows: its statistics rows and, once split, the question and children."""

    rows: np.ndarray  # indices into TreeStats
    root_index: int
    count: float
    objf: float
    best: tuple[float, int, tuple[int, ...], np.ndarray] | None = None  # gain, key, set, yes-mask
    split: tuple[int, tuple[int, ...], _Growing, _Growing] | None = None  # key, set, yes, no


@dataclass(frozen=True)
class TreeBuildConfig:
    num_leaves: int = 500
    min_count: float = 50.0  # frames each side of a split must keep
    min_gain: float = 0.0  # stop when the best split gains no more log-likelihood than this
    merge_threshold: float = -1.0  # merge leaves losing less than this; <0: the smallest split gain; 0: off
    var_floor: float = 0.01


class _Splitter:
    """Finds the best question for a set of statistics rows (vectorised over questions)."""

    def __init__(self, stats: TreeStats, questions: Questions, cfg: TreeBuildConfig) -> None:
        self.stats = stats
        self.cfg = cfg
        n_phones = int(max(stats.keys[:, [0, 1, 2]].max(), max((max(s) for s in questions.phone_sets), default=0))) + 1
        n_classes = int(max(stats.keys[:, 3].max(), max((max(s) for s in questions.pdf_class_sets), default=0))) + 1
        self.sets = {
            KEY_LEFT: questions.phone_sets,
            KEY_RIGHT: questions.phone_sets,
            KEY_CENTRE: questions.phone_sets,
            KEY_PDF_CLASS: questions.pdf_class_sets,
        }
        self.masks = {k: _set_masks(v, n_phones if k != KEY_PDF_CLASS else n_classes) for k, v in self.sets.items()}

    def objf(self, rows: np.ndarray) -> tuple[float, float]:
        s = self.stats
        n = float(s.count[rows].sum())
        return n, float(gaussian_objf(np.array(n), s.sum[rows].sum(0), s.sumsq[rows].sum(0), self.cfg.var_floor))

    def best_split(self, node: _Growing, keys: Sequence[int]) -> tuple[float, int, tuple[int, ...], np.ndarray] | None:
        best = None
        for key in keys:
            found = self._best_for_key(node, key)
            if found is not None and (best is None or found[0] > best[0]):
                best = found
        return best

    def _best_for_key(self, node: _Growing, key: int) -> tuple[float, int, tuple[int, ...], np.ndarray] | None:
        s, masks = self.stats, self.masks[key]
        if len(masks) == 0:
            return None
        values = s.keys[node.rows, _KEY_COLUMN[key]]  # (R,)
        n_values = masks.shape[1]
        count = np.bincount(values, weights=s.count[node.rows], minlength=n_values)  # (V,)
        sums = np.zeros((n_values, s.dim))
        sumsq = np.zeros((n_values, s.dim))
        np.add.at(sums, values, s.sum[node.rows])
        np.add.at(sumsq, values, s.sumsq[node.rows])
        yes_n, yes_s, yes_q = masks @ count, masks @ sums, masks @ sumsq  # (Q,), (Q, D), (Q, D)
        no_n, no_s, no_q = count.sum() - yes_n, sums.sum(0) - yes_s, sumsq.sum(0) - yes_q
        floor = self.cfg.var_floor
        gain = gaussian_objf(yes_n, yes_s, yes_q, floor) + gaussian_objf(no_n, no_s, no_q, floor) - node.objf
        min_side = max(self.cfg.min_count, 1e-9)
        gain = np.where((yes_n >= min_side) & (no_n >= min_side), gain, -np.inf)
        q = int(np.argmax(gain))
        if not np.isfinite(gain[q]):
            return None
        yes_rows = masks[q][values] > 0
        return float(gain[q]), key, self.sets[key][q], yes_rows


def _set_masks(sets: Sequence[tuple[int, ...]], n_values: int) -> np.ndarray:
    """(Q, V) 0/1 matrix: row q marks the values in sets[q] (values beyond V are never seen)."""
    masks = np.zeros((len(sets), n_values))
    for q, members in enumerate(sets):
        masks[q, [m for m in members if m < n_values]] = 1.0
    return masks


def build_tree(
    stats: TreeStats,
    roots: Sequence[Root],
    questions: Questions,
    cfg: TreeBuildConfig = TreeBuildConfig(),
) -> Tree:
    """Grow the tree greedily (largest log-likelihood gain first) to ``cfg.num_leaves``, then merge.

    Every root starts as one leaf (an unsplit root: one leaf per pdf-class). The leaf whose best
    question gains the most is split, until the leaf count reaches ``cfg.num_leaves`` or no split
    keeps ``cfg.min_count`` frames on both sides with a gain above ``cfg.min_gain``.
    """
    splitter = _Splitter(stats, questions, cfg)
    row_root = _rows_by_root(stats, roots)
    tops: list[_Growing | list[_Growing]] = []
    heap: list[tuple[float, int, _Growing]] = []
    num_leaves = 0
    for r, root in enumerate(roots):
        if not root.split:
            rows, classes = row_root[r], stats.keys[row_root[r], 3]
            tops.append([_make_node(splitter, rows[classes == c], r) for c in range(root.num_pdf_classes)])
            num_leaves += root.num_pdf_classes
            continue
        node = _make_node(splitter, row_root[r], r)
        tops.append(node)
        num_leaves += 1
        _push(heap, splitter, node, len(root.phones) > 1)
    if num_leaves > cfg.num_leaves:
        log.warning("the tree has %d roots' leaves already, more than the target %d", num_leaves, cfg.num_leaves)
    gains: list[float] = []
    with progress(total=cfg.num_leaves, initial=num_leaves, desc="tree", unit="leaf", leave=False) as bar:
        while heap and num_leaves < cfg.num_leaves:
            neg_gain, _, node = heapq.heappop(heap)
            if -neg_gain <= cfg.min_gain:
                break
            yes, no = _split_node(splitter, node)
            gains.append(-neg_gain)
            num_leaves += 1
            bar.update(1)
            shared = len(roots[node.root_index].phones) > 1
            _push(heap, splitter, yes, shared)
            _push(heap, splitter, no, shared)
    threshold = cfg.merge_threshold if cfg.merge_threshold >= 0 else (min(gains) if gains else 0.0)
    return _finish(stats, roots, tops, splitter, gains, threshold, cfg)


def _rows_by_root(stats: TreeStats, roots: Sequence[Root]) -> list[np.ndarray]:
    root_of = np.full(int(max(stats.keys[:, 1].max(), max(max(r.phones) for r in roots))) + 1, -1, np.int64)
    for r, root in enumerate(roots):
        root_of[list(root.phones)] = r
    centre_root = root_of[stats.keys[:, 1]]
    unrooted = np.unique(stats.keys[centre_root < 0, 1])
    if unrooted.size:
        log.warning("statistics of phones %s belong to no root and are ignored", unrooted.tolist())
    return [np.flatnonzero(centre_root == r) for r in range(len(roots))]


def _make_node(splitter: _Splitter, rows: np.ndarray, root_index: int) -> _Growing:
    count, objf = splitter.objf(rows)
    return _Growing(rows=rows, root_index=root_index, count=count, objf=objf)


_tiebreak = itertools.count()  # heap order among equal gains: first pushed, first split


def _push(heap: list, splitter: _Splitter, node: _Growing, shared_root: bool) -> None:
    """Find the node's best question and queue it; ``shared_root``: several centre phones, ask about it too."""
    keys = (KEY_PDF_CLASS, KEY_LEFT, KEY_RIGHT, KEY_CENTRE) if shared_root else (KEY_PDF_CLASS, KEY_LEFT, KEY_RIGHT)
    node.best = splitter.best_split(node, keys)
    if node.best is not None:
        heapq.heappush(heap, (-node.best[0], next(_tiebreak), node))


def _split_node(splitter: _Splitter, node: _Growing) -> tuple[_Growing, _Growing]:
    _gain, key, yes_set, yes_rows = node.best
    yes = _make_node(splitter, node.rows[yes_rows], node.root_index)
    no = _make_node(splitter, node.rows[~yes_rows], node.root_index)
    node.split = (key, yes_set, yes, no)
    node.best = None
    return yes, no


def _growing_leaves(node: _Growing) -> list[_Growing]:
    if node.split is None:
        return [node]
    return _growing_leaves(node.split[2]) + _growing_leaves(node.split[3])


def _finish(
    stats: TreeStats,
    roots: Sequence[Root],
    tops: list,
    splitter: _Splitter,
    gains: list[float],
    threshold: float,
    cfg: TreeBuildConfig,
) -> Tree:
    """Merge leaves within each split root, number the pdfs, and build the Kaldi-shaped tree."""
    pdf_of: dict[int, int] = {}  # id(_Growing leaf) -> pdf
    next_pdf = 0
    merges = 0
    for top in tops:
        leaves = top if isinstance(top, list) else _growing_leaves(top)
        cluster = _merge_leaves(splitter, leaves, threshold) if not isinstance(top, list) else list(range(len(leaves)))
        merges += len(leaves) - len(set(cluster))
        first: dict[int, int] = {}
        for leaf, c in zip(leaves, cluster):
            if c not in first:
                first[c] = next_pdf
                next_pdf += 1
            pdf_of[id(leaf)] = first[c]
    n_table = max(max(r.phones) for r in roots) + 1
    table: list[Node | None] = [None] * n_table
    for root, top in zip(roots, tops):
        node = _unsplit_node(top, pdf_of) if isinstance(top, list) else _to_node(top, pdf_of)
        for p in root.phones:
            table[p] = node
    info = {
        "num_leaves_before_merge": sum(len(t) if isinstance(t, list) else len(_growing_leaves(t)) for t in tops),
        "num_merged": merges,
        "num_pdfs": next_pdf,
        "num_splits": len(gains),
        "smallest_split_gain": min(gains) if gains else None,
        "merge_threshold": threshold,
        "frames": stats.num_frames,
        "objf_per_frame": _leaf_objf(tops, splitter, pdf_of) / max(stats.num_frames, 1.0),
        "monophone_objf_per_frame": _monophone_objf(stats, cfg.var_floor) / max(stats.num_frames, 1.0),
    }
    log.info("tree: %s", info)
    return Tree(root=Table(KEY_CENTRE, table), num_pdfs=next_pdf, info=info)


def _leaf_objf(tops: list, splitter: _Splitter, pdf_of: dict[int, int]) -> float:
    """Total log-likelihood of the training statistics under one Gaussian per pdf."""
    rows_of_pdf: dict[int, list[np.ndarray]] = {}
    for top in tops:
        for leaf in top if isinstance(top, list) else _growing_leaves(top):
            rows_of_pdf.setdefault(pdf_of[id(leaf)], []).append(leaf.rows)
    return sum(splitter.objf(np.concatenate(r))[1] for r in rows_of_pdf.values())


def _monophone_objf(stats: TreeStats, var_floor: float) -> float:
    """Log-likelihood of the statistics under one Gaussian per (centre phone, pdf-class): the baseline."""
    _, group = np.unique(stats.keys[:, [1, 3]], axis=0, return_inverse=True)
    group = group.ravel()
    n = int(group.max()) + 1
    count = np.bincount(group, weights=stats.count, minlength=n)
    sums, sumsq = np.zeros((n, stats.dim)), np.zeros((n, stats.dim))
    np.add.at(sums, group, stats.sum)
    np.add.at(sumsq, group, stats.sumsq)
    return float(gaussian_objf(count, sums, sumsq, var_floor).sum())


def _unsplit_node(leaves: list[_Growing], pdf_of: dict[int, int]) -> Table:
    return Table(KEY_PDF_CLASS, [Leaf(pdf_of[id(leaf)]) for leaf in leaves])


def _to_node(node: _Growing, pdf_of: dict[int, int]) -> Node:
    if node.split is None:
        return Leaf(pdf_of[id(node)])
    key, yes_set, yes, no = node.split
    return Split(key, frozenset(yes_set), _to_node(yes, pdf_of), _to_node(no, pdf_of))


def _merge_leaves(splitter: _Splitter, leaves: list[_Growing], threshold: float) -> list[int]:
    """Agglomerative merge of leaves (one root) while the cheapest merge loses less than ``threshold``.

    Returns a cluster index per leaf. Only leaves with data take part. The (n, n) matrix of merge
    losses is computed once; after each merge only the merged cluster's row and column change.
    """
    s, floor = splitter.stats, splitter.cfg.var_floor
    n = len(leaves)
    cluster = list(range(n))
    if threshold <= 0 or n < 2:
        return cluster
    count = np.array([leaf.count for leaf in leaves])  # (n,)
    sums = np.stack([s.sum[leaf.rows].sum(0) for leaf in leaves])  # (n, D)
    sumsq = np.stack([s.sumsq[leaf.rows].sum(0) for leaf in leaves])  # (n, D)
    objf = gaussian_objf(count, sums, sumsq, floor)  # (n,)
    loss = objf[:, None] + objf[None, :] - gaussian_objf(
        count[:, None] + count[None, :], sums[:, None] + sums[None, :], sumsq[:, None] + sumsq[None, :], floor
    )  # (n, n)
    empty = count <= 0
    gone = np.zeros(n, bool)  # merged into another cluster
    loss[np.tril_indices(n)] = np.inf
    loss[empty, :] = np.inf
    loss[:, empty] = np.inf
    while True:
        i, j = np.unravel_index(int(np.argmin(loss)), loss.shape)
        if not loss[i, j] < threshold:
            break
        count[i] += count[j]
        sums[i] += sums[j]
        sumsq[i] += sumsq[j]
        objf[i] = gaussian_objf(count[i], sums[i], sumsq[i], floor)
        loss[j, :] = np.inf
        loss[:, j] = np.inf
        gone[j] = True
        others = np.flatnonzero(~gone & ~empty & (np.arange(n) != i))
        row = objf[i] + objf[others] - gaussian_objf(count[i] + count[others], sums[i] + sums[others],
                                                     sumsq[i] + sumsq[others], floor)
        lo, hi = np.minimum(others, i), np.maximum(others, i)
        loss[lo, hi] = row
        cluster = [i if c == j else c for c in cluster]
    return cluster


# ------------------------------------------------------------------------------------------------
# Kaldi binary format
# ------------------------------------------------------------------------------------------------
def _token(s: str) -> bytes:
    return s.encode() + b" "


def _int32(v: int) -> bytes:
    return b"\x04" + struct.pack("<i", v)


def _uint32(v: int) -> bytes:
    return b"\xfc" + struct.pack("<I", v)  # size byte -4: unsigned, 4 bytes


def _int_vector(values: Sequence[int]) -> bytes:
    return b"\x04" + struct.pack("<i", len(values)) + struct.pack(f"<{len(values)}i", *values)


def _event_map_bytes(node: Node | None) -> bytes:
    if node is None:
        return _token("NULL")
    if isinstance(node, Leaf):
        return _token("CE") + _int32(node.pdf)
    if isinstance(node, Split):
        return (
            _token("SE") + _int32(node.key) + _int_vector(sorted(node.yes_set)) + _token("{")
            + _event_map_bytes(node.yes) + _event_map_bytes(node.no) + _token("}")
        )
    children = b"".join(_event_map_bytes(c) for c in node.children)
    return _token("TE") + _int32(node.key) + _uint32(len(node.children)) + _token("(") + children + _token(")")


def tree_to_bytes(tree: Tree) -> bytes:
    """Kaldi's binary ContextDependency (without the ``\\0B`` stream header)."""
    return (
        _token("ContextDependency") + _int32(tree.context_width) + _int32(tree.central_position) + _token("ToPdf")
        + _event_map_bytes(tree.root) + _token("EndContextDependency")
    )


def write_tree(path: str | Path, tree: Tree) -> None:
    """Write a Kaldi binary ``tree`` file (readable by Kaldi's tools and :func:`read_tree`)."""
    with atomic_open(path, "wb") as f:
        f.write(BINARY_HEADER + tree_to_bytes(tree))


class _Reader:
    def __init__(self, data: bytes, name: str) -> None:
        self.data, self.pos, self.name = data, 0, name

    def fail(self, what: str) -> TreeFormatError:
        return TreeFormatError(
            f"{self.name}: {what} at byte {self.pos}; expected a Kaldi binary tree (ContextDependency)"
        )

    def token(self) -> str:
        end = self.data.find(b" ", self.pos)
        if end < 0:
            raise self.fail("unterminated token")
        tok = self.data[self.pos : end].decode("latin-1")
        self.pos = end + 1
        return tok

    def expect(self, tok: str) -> None:
        got = self.token()
        if got != tok:
            raise self.fail(f"token {got!r} instead of {tok!r}")

    def int32(self, size_byte: int = 4) -> int:
        if self.data[self.pos] != size_byte:
            raise self.fail(f"integer size byte {self.data[self.pos]}")
        fmt = "<i" if size_byte == 4 else "<I"
        (v,) = struct.unpack_from(fmt, self.data, self.pos + 1)
        self.pos += 5
        return v

    def int_vector(self) -> list[int]:
        if self.data[self.pos] != 4:
            raise self.fail("integer vector size byte")
        (n,) = struct.unpack_from("<i", self.data, self.pos + 1)
        values = struct.unpack_from(f"<{n}i", self.data, self.pos + 5)
        self.pos += 5 + 4 * n
        return list(values)

    def event_map(self) -> Node | None:
        kind = self.token()
        if kind == "NULL":
            return None
        if kind == "CE":
            return Leaf(self.int32())
        if kind == "SE":
            key, yes_set = self.int32(), frozenset(self.int_vector())
            self.expect("{")
            yes, no = self.event_map(), self.event_map()
            self.expect("}")
            return Split(key, yes_set, yes, no)
        if kind == "TE":
            key, size = self.int32(), self.int32(0xFC)
            self.expect("(")
            children = [self.event_map() for _ in range(size)]
            self.expect(")")
            return Table(key, children)
        raise self.fail(f"unknown event map {kind!r}")


def tree_from_bytes(data: bytes, name: str = "<bytes>") -> Tree:
    """Parse Kaldi's binary ContextDependency (with or without the ``\\0B`` header)."""
    reader = _Reader(data[2:] if data.startswith(BINARY_HEADER) else data, name)
    reader.expect("ContextDependency")
    width, central = reader.int32(), reader.int32()
    if (width, central) not in ((CONTEXT_WIDTH, CENTRAL_POSITION), (1, 0)):
        raise reader.fail(f"context width {width}, central position {central} (only triphone 3/1 or monophone 1/0)")
    reader.expect("ToPdf")
    root = reader.event_map()
    reader.expect("EndContextDependency")
    if not isinstance(root, Table) or root.key != central:
        raise reader.fail("top event map is not a table on the centre phone")
    pdfs = [leaf.pdf for leaf in _iter_leaves(root)]
    return Tree(root=root, num_pdfs=max(pdfs) + 1 if pdfs else 0, context_width=width, central_position=central)


def read_tree(path: str | Path) -> Tree:
    """Read a Kaldi binary ``tree`` file (ours, one from a Kaldi experiment, or a monophone tree)."""
    return tree_from_bytes(Path(path).read_bytes(), str(path))


def context_dependency_from_bytes(data: bytes) -> Any:
    """A ``kaldi_hmm_gmm.ContextDependency`` from Kaldi binary tree bytes (header optional)."""
    import kaldi_hmm_gmm as khg

    body = data[2:] if data.startswith(BINARY_HEADER) else data
    ctx = khg.ContextDependency.__new__(khg.ContextDependency)
    ctx.__setstate__(([b - 256 if b > 127 else b for b in body],))  # pybind state: signed bytes
    return ctx


def tree_to_context_dependency(tree: Tree) -> Any:
    """The tree as kaldi-hmm-gmm's ContextDependency (for TransitionModel, graph compilers, HCLG)."""
    return context_dependency_from_bytes(tree_to_bytes(tree))


def load_context_dependency(path: str | Path) -> Any:
    """Any Kaldi binary tree file (monophone or triphone) as a ``kaldi_hmm_gmm.ContextDependency``."""
    return context_dependency_from_bytes(Path(path).read_bytes())


def all_events(phones: Sequence[int], phone_to_num_pdf_classes: Sequence[int]) -> np.ndarray:
    """Every (left, centre, right, pdf-class) of the phones, with 0 (utterance edge) as a context. -> (E, 4)"""
    contexts = np.array([0, *phones])
    rows = []
    for centre in phones:
        classes = np.arange(phone_to_num_pdf_classes[centre])
        left, right, cls = np.meshgrid(contexts, contexts, classes, indexing="ij")
        rows.append(np.stack([left.ravel(), np.full(left.size, centre), right.ravel(), cls.ravel()], 1))
    return np.concatenate(rows).astype(np.int64)


def check_context_dependency(
    tree: Tree,
    ctx_dep: Any,
    phones: Sequence[int],
    phone_to_num_pdf_classes: Sequence[int],
    max_events: int = 300_000,
    seed: int = 0,
) -> int:
    """Compare ``ctx_dep.compute`` with the Python tree on every triphone; returns how many were checked.

    With more than ``max_events`` triphones (position-dependent phone sets have millions) a seeded
    uniform sample of that size (with replacement) is checked. Raises ValueError naming the first disagreement.
    """
    classes = np.array([phone_to_num_pdf_classes[p] for p in phones])
    total = int(classes.sum()) * (len(phones) + 1) ** 2
    if total <= max_events:
        events = all_events(phones, phone_to_num_pdf_classes)  # (E, 4)
    else:
        events = _sample_events(phones, classes, max_events, np.random.default_rng(seed))
    expected = tree.compute_many(events)  # (E,)
    for (left, centre, right, pdf_class), want in zip(events.tolist(), expected.tolist()):
        ok, pdf = ctx_dep.compute([left, centre, right], pdf_class)
        if not ok or pdf != want:
            raise ValueError(
                f"kaldi tree gives {pdf if ok else 'no pdf'} for ({left}, {centre}, {right}) pdf-class "
                f"{pdf_class}; the Python tree gives {want}"
            )
    return len(events)


def _sample_events(phones: Sequence[int], classes: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n uniform draws from :func:`all_events` without building it. -> (n, 4)"""
    contexts = np.array([0, *phones])
    centre_idx = rng.choice(len(phones), size=n, p=classes / classes.sum())
    centre = np.asarray(phones)[centre_idx]
    cls = (rng.random(n) * classes[centre_idx]).astype(np.int64)
    left, right = rng.choice(contexts, size=n), rng.choice(contexts, size=n)
    return np.stack([left, centre, right, cls], 1).astype(np.int64)
