"""The aligner in bounded memory, in the shape of Kaldi's LibriSpeech recipe: train on subsets,
then align every utterance streamed from the feature archive, one chunk at a time.

* :func:`training_subset`: the utterances a system trains on: the ``n`` shortest (Kaldi's
  ``subset_data_dir.sh --shortest``, for the monophone flat start) or ``n`` spread evenly over the
  split (``subset_data_dir.sh``, for the triphone system); ``n = 0``: all of them.
* :func:`align_chunked`: the final pass over a split. Utterances, sorted by id, go in chunks of
  ``chunk_utts``; a worker reads a chunk's MFCCs from ``mfcc.scp``, normalises them with the
  speakers' means (computed beforehand in one streaming pass,
  :func:`asr_kd.align.feats.stream_speaker_means`), compiles the chunk's training graphs and
  Viterbi-aligns them. ``num_jobs`` workers (forked) run at a time; this process writes each chunk's
  alignments to the ark/scp as it arrives (temp names, renamed when the split is done) and keeps
  only running counts (:class:`SplitTally`). Memory: the model plus ``num_jobs`` chunks, whatever
  the corpus size. The labels equal those of the all-in-memory pass (each utterance is aligned
  alone, with the same features and graph).
* Resuming (:class:`ChunkReceipts`): given a chunk directory and a key, every chunk writes its
  own ark/scp pair and then a receipt (its ids and its share of the counts); a re-run with the
  same key aligns only the chunks without one. When all are done, the split's ``ali.{ark,scp}``
  and ``pdf.{ark,scp}`` are the chunks' tables joined in order: the same bytes as one pass writes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from asr_kd.align.feats import gmm_features
from asr_kd.align.model import GmmHmm
from asr_kd.align.resume import receipt_if_current
from asr_kd.align.viterbi import NO_FEATURES, AlignResult, TrainOptions, compile_graphs, realign
from asr_kd.data.lang import Lang
from asr_kd.data.manifest import Utterance
from asr_kd.fileio import read_json, write_json
from asr_kd.parallel import worker_map
from asr_kd.progress import progress as progress_bar

log = logging.getLogger(__name__)


def training_subset(utts: Sequence[Utterance], n: int, how: str) -> list[Utterance]:
    """``n`` of ``utts`` in their own order: the shortest (``how="shortest"``) or spread evenly
    (``"spread"``: every (len/n)-th); all of them when ``n`` is 0 or not below ``len(utts)``."""
    if n <= 0 or n >= len(utts):
        return list(utts)
    if how == "shortest":
        keep = {u.id for u in sorted(utts, key=lambda u: (u.num_samples, u.id))[:n]}
        return [u for u in utts if u.id in keep]
    if how == "spread":
        return [utts[i * len(utts) // n] for i in range(n)]
    raise ValueError(f"how must be 'shortest' or 'spread', got {how!r}")


@dataclass
class SplitTally:
    """Running counts of a split's alignment: what its summary and the label counts need."""

    utterances: int = 0
    aligned: int = 0
    frames: int = 0
    silence_frames: int = 0
    loglike: float = 0.0  # unscaled acoustic log-likelihood of the aligned frames
    loglike_frames: int = 0
    retried: int = 0
    last_resort: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # utt -> reason
    pdf_counts: np.ndarray | None = None  # (num_pdfs,) frames per pdf

    def add(self, result: AlignResult, tid2pdf: np.ndarray, silence_tid: np.ndarray, num_pdfs: int) -> None:
        """Count ``result`` in (its failures too). tid2pdf, silence_tid: (num_transition_ids + 1,)."""
        self.add_counts(chunk_counts(result, tid2pdf, silence_tid, num_pdfs))

    def add_counts(self, counts: Mapping[str, Any]) -> None:
        """Count in one chunk's share, as :func:`chunk_counts` (or a chunk's receipt) holds it."""
        if self.pdf_counts is None:
            self.pdf_counts = np.zeros(counts["num_pdfs"], dtype=np.int64)
        self.pdf_counts[np.asarray(counts["pdf_ids"], dtype=np.int64)] += np.asarray(counts["pdf_frames"], np.int64)
        self.aligned += counts["aligned"]
        self.frames += counts["frames"]
        self.silence_frames += counts["silence_frames"]
        self.loglike += counts["loglike"]
        self.loglike_frames += counts["loglike_frames"]
        self.retried += counts["retried"]
        self.last_resort += counts["last_resort"]
        self.failed.update(counts["failed"])

    def to_json(self) -> dict[str, Any]:
        """The tally as JSON values (pdf counts sparse); :meth:`from_json` reads it back."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "pdf_counts"}
        if self.pdf_counts is not None:
            nz = np.flatnonzero(self.pdf_counts)
            out.update(num_pdfs=len(self.pdf_counts), pdf_ids=nz.tolist(), pdf_frames=self.pdf_counts[nz].tolist())
        return out

    @classmethod
    def from_json(cls, blob: Mapping[str, Any]) -> SplitTally:
        names = {f.name for f in dataclasses.fields(cls)} - {"pdf_counts"}
        tally = cls(**{k: v for k, v in blob.items() if k in names})
        if "num_pdfs" in blob:
            tally.pdf_counts = np.zeros(blob["num_pdfs"], dtype=np.int64)
            tally.pdf_counts[np.asarray(blob["pdf_ids"], dtype=np.int64)] = blob["pdf_frames"]
        return tally


def chunk_counts(result: AlignResult, tid2pdf: np.ndarray, silence_tid: np.ndarray, num_pdfs: int) -> dict[str, Any]:
    """What :class:`SplitTally` needs of ``result`` (JSON values; frames per pdf sparse)."""
    pdf_frames = np.zeros(num_pdfs, dtype=np.int64)
    frames = silence = 0
    for ali in result.alignments.values():
        frames += len(ali)
        silence += int(silence_tid[ali].sum())
        pdf_frames += np.bincount(tid2pdf[ali], minlength=num_pdfs)
    nz = np.flatnonzero(pdf_frames)
    return {"aligned": len(result.alignments), "frames": frames, "silence_frames": silence,
            "loglike": float(result.loglike), "loglike_frames": int(result.frames), "retried": int(result.retried),
            "last_resort": int(result.last_resort), "failed": dict(result.failed), "num_pdfs": num_pdfs,
            "pdf_ids": nz.tolist(), "pdf_frames": pdf_frames[nz].tolist()}


@contextlib.contextmanager
def label_writers(out: tuple[Path, Path] | None) -> Iterator[tuple[Any, Any] | None]:
    """ark/scp writers for transition ids and pdf ids (atomic: renamed on success); None: no output."""
    from asr_kd.data.scp import ark_scp_writer

    if out is None:
        yield None
        return
    with ark_scp_writer(out[0]) as ali_out, ark_scp_writer(out[1]) as pdf_out:
        yield ali_out, pdf_out


def write_labels(writers: tuple[Any, Any], result: AlignResult, tid2pdf: np.ndarray) -> None:
    """Transition ids and pdf ids (int32) of ``result``'s utterances, sorted by id."""
    ali_out, pdf_out = writers
    for utt in sorted(result.alignments):
        tids = result.alignments[utt].astype(np.int32)  # (T,)
        ali_out.write(utt, tids)
        pdf_out.write(utt, tid2pdf[tids].astype(np.int32))


def chunks_of(ids: Sequence[str], size: int) -> list[list[str]]:
    return [list(ids[i : i + size]) for i in range(0, len(ids), size)]


@dataclass(frozen=True)
class ChunkReceipts:
    """Where a split's final pass keeps its finished chunks (``root``), and the key their receipts
    must hold to be kept: ``chunk-NNNNNN.json`` (the chunk's ids and :func:`chunk_counts`) beside
    ``chunk-NNNNNN.{ali,pdf}.{ark,scp}``."""

    root: Path
    key: str

    def receipt(self, i: int) -> Path:
        return self.root / f"chunk-{i:06d}.json"

    def tables(self, i: int) -> tuple[Path, Path]:
        return self.root / f"chunk-{i:06d}.ali.scp", self.root / f"chunk-{i:06d}.pdf.scp"

    def finished(self, chunks: Sequence[Sequence[str]]) -> set[int]:
        """The chunks an earlier run of this key finished: a current receipt of the same ids, tables present."""
        done = set()
        for i, chunk in enumerate(chunks):
            r = receipt_if_current(self.receipt(i), self.key)
            if r is not None and r.get("utts") == list(chunk) and all(
                    t.exists() and t.with_suffix(".ark").exists() for t in self.tables(i)):
                done.add(i)
        return done

    def write(self, i: int, chunk: Sequence[str], result: AlignResult, tid2pdf: np.ndarray,
              counts: dict[str, Any]) -> None:
        """Chunk ``i``'s tables, then its receipt (each atomic)."""
        with label_writers(self.tables(i)) as writers:
            write_labels(writers, result, tid2pdf)
        write_json(self.receipt(i), {"key": self.key, "utts": list(chunk), **counts})

    def join(self, n: int, out: tuple[Path, Path], tally: SplitTally) -> None:
        """Chunks 0..n-1's tables joined, in order, into ``out`` (atomic); their counts into ``tally``."""
        with label_writers(out) as writers:
            assert writers is not None
            for i in range(n):
                tally.add_counts(read_json(self.receipt(i)))
                for writer, table in zip(writers, self.tables(i)):
                    writer.append_table(table)


def align_chunked(
    model: GmmHmm, lang: Lang, scp: Path, utts: Sequence[Utterance], means: Mapping[str, np.ndarray],
    opts: TrainOptions, silence_phones: Sequence[int], chunk_utts: int, out: tuple[Path, Path] | None = None,
    desc: str = "align", receipts: ChunkReceipts | None = None,
) -> SplitTally:
    """Align ``utts`` (features from ``scp``, speaker means ``means``) chunk by chunk in
    ``opts.num_jobs`` workers; labels to ``out`` = (ali.scp, pdf.scp) when given; the tally.

    With ``receipts`` (and ``out``), chunks an earlier run of the same key finished are kept, the
    others aligned and kept there, and ``out`` is written when all are done (see the module docstring).
    An utterance without features, with a word outside words.txt, an empty graph or no path is
    a failure in the tally (the same reasons as the in-memory pass).
    """
    from asr_kd.data.scp import load_scp

    table = load_scp(scp)  # lazy: offsets only; each worker reads its chunk's matrices
    utt2spk = {u.id: u.speaker for u in utts}
    texts = {u.id: u.words for u in utts}
    lex_fst = lang.read_l_fst()
    one_job = dataclasses.replace(opts, num_jobs=1, progress=False)

    def align_chunk(chunk: list[str]) -> AlignResult:
        failed = {u: NO_FEATURES for u in chunk if u not in table}
        raw = {u: np.asarray(table[u], dtype=np.float32) for u in chunk if u not in failed}
        feats = gmm_features(raw, utt2spk, means)
        transcripts: dict[str, list[int]] = {}
        for utt in feats:
            try:
                transcripts[utt] = lang.word_ids(texts[utt])
            except KeyError as e:
                failed[utt] = f"word {e.args[0]!r} not in words.txt"
        graphs, graph_failed = compile_graphs(model, lex_fst, lang.disambig_phones, transcripts)
        result = realign(model, graphs, feats, one_job, silence_phones)
        result.failed.update(failed)
        result.failed.update(graph_failed)
        return result

    tid2pdf = model.tid2pdf()
    silence_tid = np.isin(model.tid2phone(), list(silence_phones))
    chunks = chunks_of(sorted(utt2spk), max(1, chunk_utts))
    tally = SplitTally(utterances=len(utt2spk))
    bar = progress_bar(total=len(utt2spk), desc=desc, unit="utt", disable=not opts.progress, leave=False)

    def results(todo: list[int]) -> Iterator[tuple[int, AlignResult]]:
        jobs = max(1, min(opts.num_jobs, len(todo)))
        for i, result in zip(todo, worker_map(align_chunk, [chunks[i] for i in todo], jobs)):
            yield i, result
            bar.update(len(chunks[i]))

    try:
        if receipts is not None and out is not None:
            done = receipts.finished(chunks)
            if done:
                log.info("%s: %d of %d chunks aligned by an earlier run (receipts in %s); aligning the other %d",
                         desc, len(done), len(chunks), receipts.root, len(chunks) - len(done))
                bar.update(sum(len(chunks[i]) for i in done))
            for i, result in results([i for i in range(len(chunks)) if i not in done]):
                counts = chunk_counts(result, tid2pdf, silence_tid, model.num_pdfs)
                receipts.write(i, chunks[i], result, tid2pdf, counts)
            receipts.join(len(chunks), out, tally)
        else:
            with label_writers(out) as writers:
                for i, result in results(list(range(len(chunks)))):
                    if writers is not None:
                        write_labels(writers, result, tid2pdf)
                    tally.add(result, tid2pdf, silence_tid, model.num_pdfs)
    finally:
        bar.close()
    return tally
