"""Import alignments from an existing Kaldi experiment as the DNN's per-frame HMM-state labels.

``align.kaldi_ali_dir`` names one of:

- a Kaldi alignment directory (``exp/tri4b_ali``) with ``ali.*.gz`` (transition ids, as written by
  ``gmm-align-compiled``) and ``final.mdl``: transition ids are mapped to pdf ids with the model's
  transition model. ``final.mdl`` may be binary (as Kaldi writes it) or text
  (``gmm-copy --binary=false``); ``tree`` beside it, if present, gives the context width;
- pdf ids as written by ``ali-to-pdf``: a text file (lines like ``103-1240-0000 0 0 0 5 5 5 ...``,
  optionally gzipped), a Kaldi ark, an scp, or a directory of ``pdf.*.{ark,txt,gz}`` files.

Every alignment must have exactly one label per feature frame of ``features/<split>/fbank.scp``
(Kaldi's 10 ms frames with snip-edges): mismatches are named and counted, and a length that is
a third of the features' is reported as frame subsampling (chain models), which this recipe
does not use. The outputs are the builtin aligner's: ``align/<split>/pdf.{ark,scp}`` and, with
transition ids, ``align/<split>/ali.{ark,scp}``.

When ``final.mdl`` and ``tree`` are both in the directory (with either kind of labels), they are
checked to load together and copied into ``align/`` as they are, so the graph and decode stages
build and search HCLG with Kaldi's tree and model; the lexicon they need over Kaldi's phone ids
is ``align.kaldi_lang_dir`` (Kaldi's ``data/lang``) or our ``lang/`` checked against the
experiment's ``phones.txt`` (:mod:`asr_kd.align.kaldi_lang`). The GMM itself is decoded (the
report's GMM row) only when its feature dimension is our MFCC + deltas' (a model on LDA+MLLT or
fMLLR features is not: those transforms are Kaldi's, not ours).
"""

from __future__ import annotations

import gzip
import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from asr_kd.errors import InputError
from asr_kd.fileio import write_text

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------
# Reading integer-vector archives (text or binary, optionally gzipped)
# ------------------------------------------------------------------------------------------------
def _open(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def read_int_vectors(path: Path) -> Iterator[tuple[str, np.ndarray]]:
    """(utt, int32 vector) pairs of a Kaldi archive: binary ark, text ark, or an scp."""
    path = Path(path)
    if path.suffix == ".scp":
        import kaldiio

        for utt, vec in kaldiio.load_scp(str(path)).items():
            yield utt, np.asarray(vec, dtype=np.int32)
        return
    with _open(path) as f:
        blob = f.read()
    if b"\0B" in blob[:256]:
        import io

        import kaldiio

        for utt, vec in kaldiio.load_ark(io.BytesIO(blob)):
            yield utt, np.asarray(vec, dtype=np.int32)
        return
    for lineno, line in enumerate(blob.decode().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            yield parts[0], np.array([int(x) for x in parts[1:] if x not in ("[", "]")], dtype=np.int32)
        except ValueError:
            raise InputError(f"{path}:{lineno}: expected 'utt-id int int ...', got {line[:80]!r}") from None


def read_tid2pdf(mdl: Path) -> np.ndarray:
    """transition id -> pdf id (index 0 a dummy) from a Kaldi ``final.mdl`` (binary or text)."""
    from asr_kd.align.kaldi_format import read_mdl

    return read_mdl(mdl, with_am=False).tid2pdf()


# ------------------------------------------------------------------------------------------------
# Locating the inputs
# ------------------------------------------------------------------------------------------------
def find_inputs(src: Path) -> tuple[str, list[Path], Path | None]:
    """("tid", ali files, final.mdl) or ("pdf", pdf files, None) for ``align.kaldi_ali_dir``."""
    if not src.exists():
        raise InputError(f"align.kaldi_ali_dir={src} does not exist; point it at a Kaldi ali dir or pdf file")
    if src.is_file():
        return "pdf", [src], None
    ali = sorted(src.glob("ali.*.gz"), key=_job_number)
    if ali:
        mdl = src / "final.mdl"
        if not mdl.exists():
            raise InputError(f"{src} has ali.*.gz but no final.mdl to map transition ids to pdf ids")
        return "tid", ali, mdl
    pdf = sorted([p for p in src.iterdir() if re.match(r"pdf[._].*\.(ark|txt|gz|scp)$", p.name)], key=_job_number)
    if pdf:
        return "pdf", pdf, None
    raise InputError(f"{src}: found neither ali.*.gz (+ final.mdl) nor pdf.*.(ark|txt|gz|scp) files")


def _job_number(p: Path) -> tuple[int, str]:
    m = re.search(r"\.(\d+)\.", p.name)
    return (int(m.group(1)) if m else 0, p.name)


def context_of(src: Path) -> str:
    """'monophone' / 'triphone' / ... from the tree beside the alignments, 'unknown' without one."""
    tree = (src if src.is_dir() else src.parent) / "tree"
    if not tree.exists():
        return "unknown"
    try:
        from asr_kd.align.model import read_tree

        width = read_tree(tree).context_width
    except (ValueError, RuntimeError) as e:
        log.warning("could not read %s (%s); context unknown", tree, e)
        return "unknown"
    return {1: "monophone", 2: "biphone", 3: "triphone"}.get(width, f"context-width-{width}")


# ------------------------------------------------------------------------------------------------
# The import
# ------------------------------------------------------------------------------------------------
def feature_lengths(scp: Path) -> dict[str, int]:
    """utt -> number of frames in a feature scp (reads each matrix)."""
    from asr_kd.data.scp import load_scp

    if not scp.exists():
        raise InputError(f"{scp} is missing; run the features stage before importing alignments")
    return {utt: int(m.shape[0]) for utt, m in load_scp(scp).items()}


def length_problem(n_ali: int, n_feat: int) -> str | None:
    if n_ali == n_feat:
        return None
    for factor in (3, 2, 4):
        if abs(n_ali * factor - n_feat) < factor:
            return (f"{n_ali} labels for {n_feat} frames: frame subsampling factor {factor}? "
                    "(chain alignments are not supported; use a GMM or nnet2/3 alignment at 10 ms)")
    return f"{n_ali} labels for {n_feat} frames (frame shift or snip-edges differ?)"


@dataclass(frozen=True)
class AlignOutputs:
    """Where one split's imported labels go (the files the built-in aligner writes too)."""

    pdf_scp: Path  # pdf ids per frame: the DNN labels
    ali_scp: Path  # transition ids per frame (with a model only)
    failed: Path  # the utterances without a usable alignment, ``utt reason`` a line


def import_alignments(
    files: list[Path], mdl: Path | None, lengths: dict[str, dict[str, int]], out: Mapping[str, AlignOutputs]
) -> tuple[dict[str, dict[str, Any]], int]:
    """Read every alignment, keep those of each split (``lengths``: split -> utterance -> feature
    frames) that fit its features, write each split's outputs (``out[split]``).

    Returns per-split summaries and the number of pdfs (from the model, else the labels).
    """
    from asr_kd.align.viterbi import lost
    from asr_kd.data.scp import ark_scp_writer

    tid2pdf = read_tid2pdf(mdl) if mdl is not None else None
    labels: dict[str, np.ndarray] = {}
    for path in files:
        for utt, vec in read_int_vectors(path):
            labels[utt] = vec
    if not labels:
        raise InputError(f"no alignments found in {', '.join(map(str, files))}")
    num_pdfs = int(tid2pdf.max()) + 1 if tid2pdf is not None else 0
    summaries: dict[str, dict[str, Any]] = {}
    for split, lens in lengths.items():
        failed: dict[str, str] = {}
        ok: dict[str, np.ndarray] = {}
        for utt, n_feat in sorted(lens.items()):
            if utt not in labels:
                failed[utt] = "no Kaldi alignment"
                continue
            vec = labels[utt]
            if tid2pdf is not None and (vec.min() < 1 or vec.max() >= len(tid2pdf)):
                failed[utt] = f"transition ids outside 1..{len(tid2pdf) - 1} of {mdl}"
                continue
            problem = length_problem(len(vec), n_feat)
            if problem:
                failed[utt] = problem
                continue
            ok[utt] = vec
        pdf_writer_path = out[split].pdf_scp
        with ark_scp_writer(pdf_writer_path) as pdf_out:
            for utt, vec in ok.items():
                pdf_out.write(utt, (tid2pdf[vec] if tid2pdf is not None else vec).astype(np.int32))
        if tid2pdf is not None:
            with ark_scp_writer(out[split].ali_scp) as ali_out:
                for utt, vec in ok.items():
                    ali_out.write(utt, vec.astype(np.int32))
        if tid2pdf is None and ok:
            num_pdfs = max(num_pdfs, max(int(v.max()) for v in ok.values()) + 1)
        write_text(out[split].failed, "".join(f"{u} {r}\n" for u, r in sorted(failed.items())))
        n = len(lens)
        summaries[split] = {
            "utterances": n, "aligned": len(ok), "failed": len(failed),
            "success_rate": len(ok) / n if n else 0.0,
            "length_mismatches": sum("labels for" in r for r in failed.values()),
            "frames": int(sum(len(v) for v in ok.values())),
            "failed_examples": dict(sorted(failed.items())[:20]),
            "lost": lost(failed),
        }
    return summaries, num_pdfs
