"""Kaldi's ``final.mdl`` on disk, binary and text: the transition model and the diagonal-GMM AM.

Kaldi writes a GMM-HMM as ``TransitionModel::Write`` followed by ``AmDiagGmm::Write`` in one file:

- **binary** (Kaldi's default): a ``\\0B`` header; tokens followed by one space (``<Topology> ``);
  every int32/float32 preceded by its size byte (``\\x04``); an integer vector as a size byte,
  its length and the raw values; a float vector as ``FV `` + length + raw float32; a matrix as
  ``FM `` + rows + columns + raw float32 rows. Everything little-endian.
- **text** (``gmm-copy --binary=false``): the same tokens with numbers in ASCII and ``[ ... ]``
  around vectors and matrices.

The layout, in order: ``<TransitionModel> <Topology>`` (phones, phone -> entry index, the entries'
HMM states: forward pdf class, [self-loop pdf class], transitions (destination, probability))
``</Topology> <Triples>|<Tuples>`` (phone, HMM state, forward pdf, [self-loop pdf]) ``<LogProbs>``
(a float vector, one log-probability per transition id, index 0 unused) ``</TransitionModel>``
``<DIMENSION> d <NUMPDFS> n`` and n times ``<DiagGMM> <GCONSTS> <WEIGHTS> <MEANS_INVVARS> <INV_VARS>
</DiagGMM>``. A topology whose states all have one pdf class is written with ``<Triples>``.

:func:`read_mdl` reads either form into a :class:`MdlFile` of plain numbers; :func:`write_mdl_binary`
writes one in the binary form. kaldi-hmm-gmm has no reader or writer for these two classes;
:mod:`asr_kd.align.model` builds its objects from a :class:`MdlFile` and back.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from asr_kd.fileio import atomic_open
from asr_kd.errors import InputError

BINARY_HEADER = b"\0B"
NO_PDF = -1  # Kaldi's kNoPdf: the pdf class of a topology's final (non-emitting) state

# One HMM state of a topology entry: (forward pdf class, self-loop pdf class, [(destination, probability)]).
HmmState = tuple[int, int, list[tuple[int, float]]]


@dataclass
class DiagGmmParams:
    """One pdf's diagonal GMM as Kaldi stores it (gconsts are optional there and recomputed on reading)."""

    gconsts: np.ndarray | None  # (G,) float32: the per-component constant of the log-likelihood
    weights: np.ndarray  # (G,) float32
    means_invvars: np.ndarray  # (G, D) float32: mean * inverse variance
    inv_vars: np.ndarray  # (G, D) float32: 1 / variance


@dataclass
class MdlFile:
    """The contents of a ``final.mdl``: transition model, then (unless read without it) the AM."""

    phones: list[int]  # the topology's phones, sorted
    phone2entry: dict[int, int]  # phone -> index in ``entries``
    entries: list[list[HmmState]]  # topology entries, each a list of HMM states
    tuples: list[tuple[int, int, int, int]]  # per transition state: phone, HMM state, forward pdf, self-loop pdf
    log_probs: np.ndarray  # (num_transition_ids + 1,) float32; index 0 unused
    dim: int = 0
    gmms: list[DiagGmmParams] | None = None  # None when read with ``with_am=False``
    binary: bool = True

    @property
    def is_hmm(self) -> bool:
        """Every state has one pdf class (Kaldi then writes ``<Triples>``)."""
        return all(f == s for states in self.entries for f, s, _ in states)

    def topology_text(self) -> str:
        """The topology in Kaldi's text form (what ``HmmTopology.read`` and ``lang/topo`` hold)."""
        lines = ["<Topology>"]
        by_entry: dict[int, list[int]] = {}
        for phone in self.phones:
            by_entry.setdefault(self.phone2entry[phone], []).append(phone)
        for i, states in enumerate(self.entries):
            lines += ["<TopologyEntry>", "<ForPhones>", " ".join(map(str, by_entry.get(i, []))), "</ForPhones>"]
            for s, (forward, self_loop, transitions) in enumerate(states):
                if forward == NO_PDF and not transitions:
                    lines.append(f"<State> {s} </State>")
                    continue
                pdf = (f"<PdfClass> {forward}" if forward == self_loop
                       else f"<ForwardPdfClass> {forward} <SelfLoopPdfClass> {self_loop}")
                arcs = " ".join(f"<Transition> {d} {p:.9g}" for d, p in transitions)
                lines.append(f"<State> {s} {pdf} {arcs} </State>")
            lines.append("</TopologyEntry>")
        return "\n".join([*lines, "</Topology>"]) + "\n"

    def tid2pdf(self) -> np.ndarray:
        """(num_transition_ids + 1,) int32: transition id -> pdf id (index 0 a dummy), Kaldi's numbering:
        per transition state (tuple) in order, one id per transition of its HMM state; a self-loop
        takes the self-loop pdf, every other transition the forward pdf."""
        out = [0]
        for phone, hmm_state, forward_pdf, self_loop_pdf in self.tuples:
            _, _, transitions = self.entries[self.phone2entry[phone]][hmm_state]
            out += [self_loop_pdf if d == hmm_state else forward_pdf for d, _ in transitions]
        return np.array(out, dtype=np.int32)


# ------------------------------------------------------------------------------------------------
# Binary reading
# ------------------------------------------------------------------------------------------------
class _BinaryReader:
    """Kaldi's binary basic types, tokens, vectors and matrices, read from a byte string."""

    def __init__(self, blob: bytes, path: Path, pos: int = 0) -> None:
        self.b, self.i, self.path = blob, pos, path

    def fail(self, what: str) -> InputError:
        return InputError(f"{self.path}: {what} at byte {self.i}; is it a Kaldi final.mdl (gmm-init-mono, "
                          "gmm-est, gmm-copy write one)?")

    def token(self) -> str:
        j = self.b.find(b" ", self.i)
        if j < 0:
            raise self.fail("unexpected end of file")
        tok, self.i = self.b[self.i : j].decode(errors="replace"), j + 1
        return tok

    def expect(self, tok: str) -> None:
        got = self.token()
        if got != tok:
            raise self.fail(f"expected {tok}, found {got[:40]!r}")

    def _sized(self, fmt: str) -> int | float:
        if self.i + 5 > len(self.b) or self.b[self.i] != 4:
            raise self.fail("expected a 4-byte number")
        (v,) = struct.unpack_from(fmt, self.b, self.i + 1)
        self.i += 5
        return v

    def int32(self) -> int:
        return int(self._sized("<i"))

    def float32(self) -> float:
        return float(self._sized("<f"))

    def int_vector(self) -> list[int]:
        if self.b[self.i] != 4:
            raise self.fail("expected an int32 vector")
        (n,) = struct.unpack_from("<i", self.b, self.i + 1)
        vals = list(struct.unpack_from(f"<{n}i", self.b, self.i + 5))
        self.i += 5 + 4 * n
        return vals

    def _floats(self, n: int, double: bool) -> np.ndarray:
        dtype = np.dtype("<f8" if double else "<f4")
        end = self.i + n * dtype.itemsize
        if end > len(self.b):
            raise self.fail("unexpected end of file")
        out = np.frombuffer(self.b, dtype=dtype, count=n, offset=self.i).astype(np.float32)
        self.i = end
        return out

    def vector(self) -> np.ndarray:
        kind = self.token()
        if kind not in ("FV", "DV"):
            raise self.fail(f"expected a float vector (FV), found {kind!r}")
        return self._floats(self.int32(), kind == "DV")

    def matrix(self) -> np.ndarray:
        kind = self.token()
        if kind not in ("FM", "DM"):
            raise self.fail(f"expected a float matrix (FM), found {kind!r}")
        rows, cols = self.int32(), self.int32()
        return self._floats(rows * cols, kind == "DM").reshape(rows, cols)


def _read_binary(blob: bytes, path: Path, with_am: bool) -> MdlFile:
    r = _BinaryReader(blob, path, len(BINARY_HEADER))
    r.expect("<TransitionModel>")
    r.expect("<Topology>")
    phones, phone2idx = r.int_vector(), r.int_vector()
    n = r.int32()
    is_hmm = n != -1  # -1 announces the format with a self-loop pdf class per state
    if not is_hmm:
        n = r.int32()
    entries: list[list[HmmState]] = []
    for _ in range(n):
        states: list[HmmState] = []
        for _ in range(r.int32()):
            forward = r.int32()
            self_loop = forward if is_hmm else r.int32()
            transitions = [(r.int32(), r.float32()) for _ in range(r.int32())]
            states.append((forward, self_loop, transitions))
        entries.append(states)
    r.expect("</Topology>")
    kind = r.token()
    if kind not in ("<Triples>", "<Tuples>"):
        raise r.fail(f"expected <Triples> or <Tuples>, found {kind!r}")
    tuples = []
    for _ in range(r.int32()):
        phone, hmm_state, forward_pdf = r.int32(), r.int32(), r.int32()
        tuples.append((phone, hmm_state, forward_pdf, r.int32() if kind == "<Tuples>" else forward_pdf))
    r.expect(kind.replace("<", "</"))
    r.expect("<LogProbs>")
    log_probs = r.vector()
    r.expect("</LogProbs>")
    r.expect("</TransitionModel>")
    mdl = MdlFile(phones=phones, phone2entry={p: phone2idx[p] for p in phones}, entries=entries,
                  tuples=tuples, log_probs=log_probs, binary=True)
    if with_am:
        r.expect("<DIMENSION>")
        mdl.dim = r.int32()
        r.expect("<NUMPDFS>")
        mdl.gmms = [_binary_gmm(r) for _ in range(r.int32())]
    return mdl


def _binary_gmm(r: _BinaryReader) -> DiagGmmParams:
    r.expect("<DiagGMM>")
    fields: dict[str, np.ndarray] = {}
    while (tok := r.token()) != "</DiagGMM>":
        if tok in ("<GCONSTS>", "<WEIGHTS>"):
            fields[tok] = r.vector()
        elif tok in ("<MEANS_INVVARS>", "<INV_VARS>"):
            fields[tok] = r.matrix()
        else:
            raise r.fail(f"unexpected {tok!r} in a <DiagGMM>")
    missing = {"<WEIGHTS>", "<MEANS_INVVARS>", "<INV_VARS>"} - set(fields)
    if missing:
        raise r.fail(f"a <DiagGMM> without {', '.join(sorted(missing))}")
    return DiagGmmParams(fields.get("<GCONSTS>"), fields["<WEIGHTS>"], fields["<MEANS_INVVARS>"], fields["<INV_VARS>"])


# ------------------------------------------------------------------------------------------------
# Text reading
# ------------------------------------------------------------------------------------------------
def _text_topology(text: str) -> tuple[list[int], dict[int, int], list[list[HmmState]]]:
    entries: list[list[HmmState]] = []
    phone2entry: dict[int, int] = {}
    for block in re.findall(r"<TopologyEntry>(.*?)</TopologyEntry>", text, flags=re.S):
        phones = re.search(r"<ForPhones>(.*?)</ForPhones>", block, flags=re.S)
        for p in phones.group(1).split() if phones else ():
            phone2entry[int(p)] = len(entries)
        states: list[HmmState] = []
        for st in re.findall(r"<State>(.*?)</State>", block, flags=re.S):
            pdf = re.search(r"<PdfClass>\s+(-?\d+)", st)
            fwd = re.search(r"<ForwardPdfClass>\s+(-?\d+)", st)
            slp = re.search(r"<SelfLoopPdfClass>\s+(-?\d+)", st)
            forward = int(pdf.group(1)) if pdf else int(fwd.group(1)) if fwd else NO_PDF
            self_loop = int(slp.group(1)) if slp else forward
            transitions = [(int(d), float(p)) for d, p in re.findall(r"<Transition>\s+(\d+)\s+(\S+)", st)]
            states.append((forward, self_loop, transitions))
        entries.append(states)
    return sorted(phone2entry), phone2entry, entries


def _text_numbers(block: str) -> np.ndarray:
    return np.array(block.replace("[", " ").replace("]", " ").split(), dtype=np.float64)


def _read_text(text: str, path: Path, with_am: bool) -> MdlFile:
    end = text.find("</TransitionModel>")
    if end < 0 or "<TransitionModel>" not in text[:end]:
        raise InputError(f"{path}: no <TransitionModel> ... </TransitionModel>; is it a Kaldi final.mdl?")
    head = text[:end]
    phones, phone2entry, entries = _text_topology(head[: head.find("</Topology>")])
    m = re.search(r"<(Tuples|Triples)>\s+(\d+)(.*?)</(?:Tuples|Triples)>", head, flags=re.S)
    lp = re.search(r"<LogProbs>(.*?)</LogProbs>", head, flags=re.S)
    if not m or not lp:
        raise InputError(f"{path}: the transition model has no <Tuples>/<Triples> or no <LogProbs> section")
    width = 4 if m.group(1) == "Tuples" else 3
    nums = [int(x) for x in m.group(3).split()]
    if len(nums) != width * int(m.group(2)):
        raise InputError(f"{path}: <{m.group(1)}> says {m.group(2)} rows but holds {len(nums)} numbers")
    rows = [tuple(nums[i : i + width]) for i in range(0, len(nums), width)]
    tuples = [(r[0], r[1], r[2], r[3] if width == 4 else r[2]) for r in rows]
    mdl = MdlFile(phones=phones, phone2entry=phone2entry, entries=entries, tuples=tuples,
                  log_probs=_text_numbers(lp.group(1)).astype(np.float32), binary=False)
    if with_am:
        mdl.dim, mdl.gmms = _text_am(text[end:], path)
    return mdl


def _text_am(text: str, path: Path) -> tuple[int, list[DiagGmmParams]]:
    m = re.search(r"<DIMENSION>\s+(\d+)\s+<NUMPDFS>\s+(\d+)", text)
    if not m:
        raise InputError(f"{path}: no <DIMENSION> <NUMPDFS> header of an AmDiagGmm after the transition model")
    dim, num_pdfs = int(m.group(1)), int(m.group(2))
    blocks = re.findall(r"<DiagGMM>(.*?)</DiagGMM>", text[m.end() :], flags=re.S)
    if len(blocks) != num_pdfs:
        raise InputError(f"{path}: {len(blocks)} <DiagGMM> blocks, the header says {num_pdfs}")
    gmms = []
    for block in blocks:
        fields = dict(re.findall(r"<(\w+)>\s*(\[[^\]]*\])", block))
        missing = {"WEIGHTS", "MEANS_INVVARS", "INV_VARS"} - set(fields)
        if missing:
            raise InputError(f"{path}: a <DiagGMM> without {', '.join(sorted(missing))}")
        weights = _text_numbers(fields["WEIGHTS"]).astype(np.float32)  # (G,)
        shape = (len(weights), dim)
        gconsts = _text_numbers(fields["GCONSTS"]).astype(np.float32) if "GCONSTS" in fields else None
        gmms.append(DiagGmmParams(gconsts, weights,
                                  _text_numbers(fields["MEANS_INVVARS"]).astype(np.float32).reshape(shape),
                                  _text_numbers(fields["INV_VARS"]).astype(np.float32).reshape(shape)))
    return dim, gmms


def read_mdl(path: str | Path, with_am: bool = True) -> MdlFile:
    """A Kaldi ``final.mdl``, binary or text; ``with_am=False`` stops after the transition model."""
    path = Path(path)
    blob = path.read_bytes()
    if blob.startswith(BINARY_HEADER):
        return _read_binary(blob, path, with_am)
    return _read_text(blob.decode(errors="replace"), path, with_am)


# ------------------------------------------------------------------------------------------------
# Binary writing
# ------------------------------------------------------------------------------------------------
def _tok(t: str) -> bytes:
    return t.encode() + b" "


def _i32(v: int) -> bytes:
    return b"\x04" + struct.pack("<i", v)


def _f32(v: float) -> bytes:
    return b"\x04" + struct.pack("<f", v)


def _ivec(v: list[int]) -> bytes:
    return b"\x04" + struct.pack(f"<i{len(v)}i", len(v), *v)


def _fvec(v: np.ndarray) -> bytes:
    v = np.ascontiguousarray(v, dtype="<f4").ravel()
    return _tok("FV") + _i32(len(v)) + v.tobytes()


def _fmat(m: np.ndarray) -> bytes:
    m = np.ascontiguousarray(m, dtype="<f4")
    return _tok("FM") + _i32(m.shape[0]) + _i32(m.shape[1]) + m.tobytes()


def transition_model_bytes(mdl: MdlFile) -> bytes:
    """``TransitionModel::Write`` in binary (without the file header)."""
    is_hmm = mdl.is_hmm
    phone2idx = [mdl.phone2entry.get(p, -1) for p in range(max(mdl.phones) + 1)]
    out = [_tok("<TransitionModel>"), _tok("<Topology>"), _ivec(mdl.phones), _ivec(phone2idx)]
    if not is_hmm:
        out.append(_i32(-1))
    out.append(_i32(len(mdl.entries)))
    for states in mdl.entries:
        out.append(_i32(len(states)))
        for forward, self_loop, transitions in states:
            out.append(_i32(forward))
            if not is_hmm:
                out.append(_i32(self_loop))
            out.append(_i32(len(transitions)))
            out += [_i32(d) + _f32(p) for d, p in transitions]
    kind = "Triples" if is_hmm else "Tuples"
    out += [_tok("</Topology>"), _tok(f"<{kind}>"), _i32(len(mdl.tuples))]
    for phone, hmm_state, forward_pdf, self_loop_pdf in mdl.tuples:
        out.append(_i32(phone) + _i32(hmm_state) + _i32(forward_pdf) + (b"" if is_hmm else _i32(self_loop_pdf)))
    out += [_tok(f"</{kind}>"), _tok("<LogProbs>"), _fvec(mdl.log_probs), _tok("</LogProbs>"),
            _tok("</TransitionModel>")]
    return b"".join(out)


def am_bytes(mdl: MdlFile) -> bytes:
    """``AmDiagGmm::Write`` in binary."""
    if mdl.gmms is None:
        raise ValueError("the model was read without its AM (with_am=False); nothing to write")
    out = [_tok("<DIMENSION>"), _i32(mdl.dim), _tok("<NUMPDFS>"), _i32(len(mdl.gmms))]
    for g in mdl.gmms:
        gconsts = b"" if g.gconsts is None else _tok("<GCONSTS>") + _fvec(g.gconsts)
        out += [_tok("<DiagGMM>"), gconsts, _tok("<WEIGHTS>"), _fvec(g.weights),
                _tok("<MEANS_INVVARS>"), _fmat(g.means_invvars), _tok("<INV_VARS>"), _fmat(g.inv_vars),
                _tok("</DiagGMM>")]
    return b"".join(out)


def write_mdl_binary(mdl: MdlFile, path: str | Path) -> None:
    """Write ``mdl`` as Kaldi writes ``final.mdl`` by default (binary), atomically."""
    with atomic_open(path, "wb") as f:
        f.write(BINARY_HEADER + transition_model_bytes(mdl) + am_bytes(mdl))
