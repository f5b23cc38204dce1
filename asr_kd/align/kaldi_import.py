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
"""

from __future__ import annotations

import gzip
import logging
import math
import re
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from asr_kd.config import RecipeConfig
from asr_kd.fileio import write_text
from asr_kd.paths import SPLITS, RunPaths
from asr_kd.runner import StageError

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
            raise StageError(f"{path}:{lineno}: expected 'utt-id int int ...', got {line[:80]!r}") from None


# ------------------------------------------------------------------------------------------------
# The transition model of final.mdl: transition id -> pdf id
# ------------------------------------------------------------------------------------------------
def _tid2pdf(entries: list[list[tuple[int, int, list[int]]]], phone2entry: dict[int, int],
             tuples: list[tuple[int, int, int, int]]) -> np.ndarray:
    """Kaldi's transition-id numbering: per transition state (tuple) in order, one id per HMM
    transition of its state; a self-loop maps to the self-loop pdf, others to the forward pdf.

    entries: per topology entry, per HMM state (forward pdf class, self-loop pdf class, [dest...]).
    """
    out = [0]  # index 0 is a dummy, as in TransitionModel
    for phone, hmm_state, forward_pdf, self_loop_pdf in tuples:
        dests = entries[phone2entry[phone]][hmm_state][2]
        out += [self_loop_pdf if d == hmm_state else forward_pdf for d in dests]
    return np.array(out, dtype=np.int32)


def _text_topology(text: str) -> tuple[list[list[tuple[int, int, list[int]]]], dict[int, int]]:
    entries: list[list[tuple[int, int, list[int]]]] = []
    phone2entry: dict[int, int] = {}
    for block in re.findall(r"<TopologyEntry>(.*?)</TopologyEntry>", text, flags=re.S):
        phones = [int(x) for x in re.search(r"<ForPhones>(.*?)</ForPhones>", block, flags=re.S).group(1).split()]
        states = []
        for st in re.findall(r"<State>(.*?)</State>", block, flags=re.S):
            pdf = re.search(r"<PdfClass>\s+(-?\d+)", st)
            fwd = re.search(r"<ForwardPdfClass>\s+(-?\d+)", st)
            slp = re.search(r"<SelfLoopPdfClass>\s+(-?\d+)", st)
            f = int(pdf.group(1)) if pdf else int(fwd.group(1)) if fwd else -1
            s = int(slp.group(1)) if slp else f
            dests = [int(d) for d in re.findall(r"<Transition>\s+(\d+)", st)]
            states.append((f, s, dests))
        for p in phones:
            phone2entry[p] = len(entries)
        entries.append(states)
    return entries, phone2entry


class _Binary:
    """A reader of Kaldi's binary basic types (size byte + little-endian value) and tokens."""

    def __init__(self, blob: bytes, path: Path) -> None:
        self.b, self.i, self.path = blob, 0, path

    def token(self) -> str:
        j = self.b.index(b" ", self.i)
        tok, self.i = self.b[self.i : j].decode(), j + 1
        return tok

    def expect(self, tok: str) -> None:
        got = self.token()
        if got != tok:
            raise StageError(f"{self.path}: expected {tok} in the binary model, found {got!r}")

    def int32(self) -> int:
        size = self.b[self.i]
        if size != 4:
            raise StageError(f"{self.path}: expected a 4-byte integer at byte {self.i}")
        (v,) = struct.unpack_from("<i", self.b, self.i + 1)
        self.i += 5
        return v

    def float32(self) -> float:
        (v,) = struct.unpack_from("<f", self.b, self.i + 1)
        self.i += 5
        return v

    def int_vector(self) -> list[int]:
        self.i += 1  # element size
        (n,) = struct.unpack_from("<i", self.b, self.i)
        vals = list(struct.unpack_from(f"<{n}i", self.b, self.i + 4))
        self.i += 4 + 4 * n
        return vals


def _binary_transition_model(blob: bytes, path: Path) -> tuple[Any, dict[int, int], list[tuple[int, ...]]]:
    r = _Binary(blob, path)
    r.expect("<TransitionModel>")
    r.expect("<Topology>")
    phones, phone2idx = r.int_vector(), r.int_vector()
    n = r.int32()
    is_hmm = n != -1
    if not is_hmm:
        n = r.int32()
    entries = []
    for _ in range(n):
        states = []
        for _ in range(r.int32()):
            f = r.int32()
            s = f if is_hmm else r.int32()
            dests = []
            for _ in range(r.int32()):
                dests.append(r.int32())
                r.float32()
            states.append((f, s, dests))
        entries.append(states)
    r.expect("</Topology>")
    kind = r.token()
    width = 3 if kind == "<Triples>" else 4
    tuples = []
    for _ in range(r.int32()):
        t = tuple(r.int32() for _ in range(width))
        tuples.append(t if width == 4 else (t[0], t[1], t[2], t[2]))
    phone2entry = {p: phone2idx[p] for p in phones}
    return entries, phone2entry, tuples


def read_tid2pdf(mdl: Path) -> np.ndarray:
    """transition id -> pdf id (index 0 a dummy) from a Kaldi ``final.mdl`` (binary or text)."""
    blob = Path(mdl).read_bytes()
    if blob.startswith(b"\0B"):
        entries, phone2entry, tuples = _binary_transition_model(blob[2:], mdl)
        return _tid2pdf(entries, phone2entry, tuples)
    text = blob.decode(errors="replace")
    end = text.find("</TransitionModel>")
    if end < 0:
        raise StageError(f"{mdl}: no <TransitionModel> found; is it a Kaldi final.mdl?")
    head = text[:end]
    entries, phone2entry = _text_topology(head)
    m = re.search(r"<(Tuples|Triples)>\s+(\d+)(.*?)</(Tuples|Triples)>", head, flags=re.S)
    if not m:
        raise StageError(f"{mdl}: no <Tuples>/<Triples> section in the transition model")
    nums = [int(x) for x in m.group(3).split()]
    width = 4 if m.group(1) == "Tuples" else 3
    rows = [tuple(nums[i : i + width]) for i in range(0, len(nums), width)]
    tuples = [r if width == 4 else (r[0], r[1], r[2], r[2]) for r in rows]
    return _tid2pdf(entries, phone2entry, tuples)


# ------------------------------------------------------------------------------------------------
# Locating the inputs
# ------------------------------------------------------------------------------------------------
def find_inputs(src: Path) -> tuple[str, list[Path], Path | None]:
    """("tid", ali files, final.mdl) or ("pdf", pdf files, None) for ``align.kaldi_ali_dir``."""
    if not src.exists():
        raise StageError(f"align.kaldi_ali_dir={src} does not exist; point it at a Kaldi ali dir or pdf file")
    if src.is_file():
        return "pdf", [src], None
    ali = sorted(src.glob("ali.*.gz"), key=_job_number)
    if ali:
        mdl = src / "final.mdl"
        if not mdl.exists():
            raise StageError(f"{src} has ali.*.gz but no final.mdl to map transition ids to pdf ids")
        return "tid", ali, mdl
    pdf = sorted([p for p in src.iterdir() if re.match(r"pdf[._].*\.(ark|txt|gz|scp)$", p.name)], key=_job_number)
    if pdf:
        return "pdf", pdf, None
    raise StageError(f"{src}: found neither ali.*.gz (+ final.mdl) nor pdf.*.(ark|txt|gz|scp) files")


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
        raise StageError(f"{scp} is missing; run the features stage before importing alignments")
    return {utt: int(m.shape[0]) for utt, m in load_scp(scp).items()}


def length_problem(n_ali: int, n_feat: int) -> str | None:
    if n_ali == n_feat:
        return None
    for factor in (3, 2, 4):
        if abs(n_ali * factor - n_feat) < factor:
            return (f"{n_ali} labels for {n_feat} frames: frame subsampling factor {factor}? "
                    "(chain alignments are not supported; use a GMM or nnet2/3 alignment at 10 ms)")
    return f"{n_ali} labels for {n_feat} frames (frame shift or snip-edges differ?)"


def import_alignments(
    files: list[Path], mdl: Path | None, lengths: dict[str, dict[str, int]], out: RunPaths
) -> tuple[dict[str, dict[str, Any]], int]:
    """Read every alignment, keep those of each split that fit its features, write the outputs.

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
        raise StageError(f"no alignments found in {', '.join(map(str, files))}")
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
        pdf_writer_path = out.pdf_scp(split)
        with ark_scp_writer(pdf_writer_path) as pdf_out:
            for utt, vec in ok.items():
                pdf_out.write(utt, (tid2pdf[vec] if tid2pdf is not None else vec).astype(np.int32))
        if tid2pdf is not None:
            with ark_scp_writer(out.ali_scp(split)) as ali_out:
                for utt, vec in ok.items():
                    ali_out.write(utt, vec.astype(np.int32))
        if tid2pdf is None and ok:
            num_pdfs = max(num_pdfs, max(int(v.max()) for v in ok.values()) + 1)
        write_text(out.align_failed(split), "".join(f"{u} {r}\n" for u, r in sorted(failed.items())))
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


def import_kaldi_alignments(cfg: RecipeConfig, paths: RunPaths) -> dict[str, Any]:
    """The align stage with ``align.source=kaldi``: Kaldi alignments -> pdf.scp (+ ali.scp) per split."""
    if not cfg.align.kaldi_ali_dir:
        raise StageError("align.source=kaldi needs --set align.kaldi_ali_dir=PATH (a Kaldi ali dir or pdf file)")
    src = Path(cfg.align.kaldi_ali_dir)
    mode, files, mdl = find_inputs(src)
    lengths = {split: feature_lengths(paths.fbank_scp(split)) for split in SPLITS}
    splits, num_pdfs = import_alignments(files, mdl, lengths, paths)
    train = splits["train"]
    if train["utterances"] and train["failed"] / train["utterances"] > cfg.align.max_fail_fraction:
        needed = math.ceil(train["failed"] / train["utterances"] * 1000) / 1000
        raise StageError(
            f"{train['failed']} of {train['utterances']} train utterances have no usable Kaldi alignment "
            f"(more than align.max_fail_fraction={cfg.align.max_fail_fraction:g}); their ids and reasons are in "
            f"{paths.align_failed('train')}. Fix those alignments, or accept the loss with "
            f"--set align.max_fail_fraction={needed:g}"
        )
    for split in ("dev", "test"):
        if splits[split]["aligned"] == 0:
            log.warning("no Kaldi alignments for the %s split: its frame accuracy cannot be measured", split)
    return {
        "source": "kaldi",
        "kaldi_input": str(src),
        "input_kind": "transition ids + final.mdl" if mode == "tid" else "pdf ids",
        "context": context_of(src),
        "num_pdfs": num_pdfs,
        "success_rate": train["success_rate"],
        "success_rate_per_split": {s: v["success_rate"] for s, v in splits.items()},
        "utterances_per_split": {s: v["utterances"] for s, v in splits.items()},
        "length_mismatches": sum(v["length_mismatches"] for v in splits.values()),
        "splits": splits,
    }
