"""The GMM-HMM acoustic model: (context dependency, transition model, diagonal-GMM AM) and its files.

On disk, as Kaldi's ``exp/mono``:

- ``tree``: the context dependency in Kaldi's binary format (``ContextDependency.write``), read
  back through its pickle state (the same bytes without Kaldi's ``\\0B`` binary header).
- ``final.mdl``: the built-in aligner writes Kaldi's *text* model format (``gmm-copy
  --binary=false`` writes the same): ``<TransitionModel>`` (topology, ``<Tuples>`` phone / HMM
  state / forward pdf / self-loop pdf, ``<LogProbs>``) followed by the ``AmDiagGmm``
  (``<DIMENSION> <NUMPDFS>`` then one ``<DiagGMM>`` per pdf with ``<GCONSTS> <WEIGHTS>
  <MEANS_INVVARS> <INV_VARS>``). Kaldi tools read it as is. :func:`load_model` reads it, or a
  Kaldi binary model (an imported Kaldi experiment's), through :mod:`asr_kd.align.kaldi_format`;
  :func:`save_model_binary` writes the binary form (the Kaldi export). kaldi-hmm-gmm itself has
  no reader or writer for either.

:func:`load_model` returns a :class:`GmmHmm` that decoding and triphone training reuse.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kaldi_hmm_gmm as khg
import numpy as np

from asr_kd.align.kaldi_format import DiagGmmParams, MdlFile, read_mdl, write_mdl_binary
from asr_kd.fileio import atomic_open, atomic_path
from asr_kd.files import GMM_MODEL_FILE, GMM_TREE_FILE
from asr_kd.errors import InputError

log = logging.getLogger(__name__)



@dataclass
class GmmHmm:
    """A GMM-HMM: the three objects every kaldi-hmm-gmm call takes, plus the topology."""

    ctx_dep: Any  # khg.ContextDependency
    trans_model: Any  # khg.TransitionModel
    am: Any  # khg.AmDiagGmm
    topo: Any  # khg.HmmTopology

    @property
    def num_pdfs(self) -> int:
        return int(self.trans_model.num_pdfs)

    @property
    def num_gauss(self) -> int:
        return int(self.am.num_gauss)

    @property
    def dim(self) -> int:
        return int(self.am.dim)

    def tid2pdf(self) -> np.ndarray:
        """(num_transition_ids + 1,) int32: transition id -> pdf id (index 0 is a dummy entry)."""
        return np.asarray(self.trans_model.transition_id_to_pdf_array(), dtype=np.int32)

    def tid2phone(self) -> np.ndarray:
        """(num_transition_ids + 1,) int32: transition id -> phone id (index 0 -> 0)."""
        n = int(self.trans_model.num_transition_ids)
        return np.array([0] + [self.trans_model.transition_id_to_phone(t) for t in range(1, n + 1)], np.int32)


def single_gaussian(mean: np.ndarray, var: np.ndarray) -> Any:
    """A one-component khg.DiagGmm with the given (D,) mean and variance."""
    gmm = khg.DiagGmm(nmix=1, dim=mean.shape[0])
    gmm.set_weights(np.ones(1, dtype=np.float32))
    gmm.set_means(mean[None, :].astype(np.float32))  # (1, D)
    gmm.set_invvars((1.0 / np.maximum(var, 1e-3))[None, :].astype(np.float32))  # (1, D)
    gmm.compute_gconsts()
    return gmm


def init_monophone(topo: Any, mean: np.ndarray, var: np.ndarray) -> GmmHmm:
    """As ``gmm-init-mono``: a monophone tree and one global Gaussian copied into every pdf."""
    ctx_dep = khg.monophone_context_dependency(
        phones=topo.phones, phone2num_pdf_classes=topo.get_phone_to_num_pdf_classes()
    )
    return init_from_tree(topo, ctx_dep, mean, var)


def init_from_tree(topo: Any, ctx_dep: Any, mean: np.ndarray, var: np.ndarray) -> GmmHmm:
    """A model for any context dependency (monophone or a tied-triphone tree), flat GMMs."""
    trans_model = khg.TransitionModel(ctx_dep=ctx_dep, hmm_topo=topo)
    am = khg.AmDiagGmm()
    gmm = single_gaussian(mean, var)
    for _ in range(ctx_dep.num_pdfs):
        am.add_pdf(gmm)
    return GmmHmm(ctx_dep=ctx_dep, trans_model=trans_model, am=am, topo=topo)


def boosted_am(model: GmmHmm, silence_phones: list[int], boost: float) -> Any:
    """A copy of the AM with silence pdfs' weights times ``boost`` (Kaldi's gmm-boost-silence)."""
    am = khg.AmDiagGmm()
    am.copy_from_am_diag_gmm(model.am)
    if boost == 1.0:
        return am
    sil_pdfs = silence_pdfs(model, silence_phones)
    for pdf in sil_pdfs:
        gmm = am.get_pdf(pdf)
        gmm.set_weights((np.asarray(gmm.weights) * boost).astype(np.float32))
        gmm.compute_gconsts()
    return am


def silence_pdfs(model: GmmHmm, silence_phones: list[int]) -> list[int]:
    """Pdf ids reachable from the silence phones."""
    tid2pdf, tid2phone = model.tid2pdf(), model.tid2phone()
    mask = np.isin(tid2phone, silence_phones)
    mask[0] = False
    return sorted(set(tid2pdf[mask].tolist()))


# ------------------------------------------------------------------------------------------------
# Kaldi text format
# ------------------------------------------------------------------------------------------------
def _vec(v: np.ndarray) -> str:
    return " [ " + " ".join(f"{x:.9g}" for x in np.asarray(v).ravel()) + " ]\n"


def _mat(m: np.ndarray) -> str:
    rows = "\n".join("  " + " ".join(f"{x:.9g}" for x in row) for row in np.asarray(m))
    return " [\n" + rows + " ]\n"


def transition_model_text(tm: Any) -> str:
    lines = ["<TransitionModel> \n", str(tm.topo).rstrip() + " \n"]
    tuples = tm.tuples
    lines.append(f"<Tuples> {len(tuples)} \n")
    for t in tuples:
        phone, hmm_state, forward_pdf, self_loop_pdf = t.__getstate__()
        lines.append(f"{phone} {hmm_state} {forward_pdf} {self_loop_pdf} \n")
    lines.append("</Tuples> \n<LogProbs> \n")
    lines.append(_vec(np.asarray(tm.log_probs, dtype=np.float64)))
    lines.append("</LogProbs> \n</TransitionModel> \n")
    return "".join(lines)


def am_text(am: Any) -> str:
    parts = [f"<DIMENSION> {am.dim} <NUMPDFS> {am.num_pdfs} "]
    for pdf in range(am.num_pdfs):
        g = am.get_pdf(pdf)
        parts.append("<DiagGMM> \n")
        parts.append("<GCONSTS> " + _vec(g.gconsts))
        parts.append("<WEIGHTS> " + _vec(g.weights))
        parts.append("<MEANS_INVVARS> " + _mat(g.means_invvars))
        parts.append("<INV_VARS> " + _mat(g.inv_vars))
        parts.append("</DiagGMM> \n")
    return "".join(parts)


def save_model(model: GmmHmm, mdl_path: Path, tree_path: Path) -> None:
    """Write ``final.mdl`` (Kaldi text) and ``tree`` (Kaldi binary), each atomically."""
    with atomic_open(mdl_path, "w") as f:
        f.write(transition_model_text(model.trans_model))
        f.write(am_text(model.am))
    with atomic_path(tree_path) as tmp:
        model.ctx_dep.write(True, str(tmp))


def save_model_binary(model: GmmHmm, mdl_path: Path) -> None:
    """Write ``final.mdl`` in Kaldi's binary format (what ``gmm-copy`` writes by default), atomically."""
    write_mdl_binary(to_mdl(model), mdl_path)


def read_tree(path: Path) -> Any:
    """A khg.ContextDependency from a Kaldi binary tree file (as written by ``write(True, ...)``)."""
    blob = Path(path).read_bytes()
    if not blob.startswith(b"\0B"):
        raise ValueError(f"{path}: not a Kaldi binary tree (no \\0B header); write it with copy-tree --binary=true")
    ctx_dep = khg.ContextDependency.__new__(khg.ContextDependency)
    ctx_dep.__setstate__((np.frombuffer(blob[2:], dtype=np.int8).tolist(),))
    return ctx_dep


def to_mdl(model: GmmHmm) -> MdlFile:
    """The model as the numbers of a Kaldi ``final.mdl`` (for :func:`asr_kd.align.kaldi_format.write_mdl_binary`)."""
    tm = model.trans_model
    phones, phone2idx, entries = tm.topo.__getstate__()
    gmms = []
    for pdf in range(model.am.num_pdfs):
        g = model.am.get_pdf(pdf)
        gmms.append(DiagGmmParams(np.asarray(g.gconsts, np.float32), np.asarray(g.weights, np.float32),
                                  np.asarray(g.means_invvars, np.float32), np.asarray(g.inv_vars, np.float32)))
    return MdlFile(
        phones=list(phones),
        phone2entry={p: phone2idx[p] for p in phones},
        entries=[[st.__getstate__() for st in states] for states in entries],
        tuples=[tuple(t.__getstate__()) for t in tm.tuples],
        log_probs=np.asarray(tm.log_probs, np.float32),
        dim=int(model.am.dim),
        gmms=gmms,
    )


def from_mdl(mdl: MdlFile, ctx_dep: Any, path: Path) -> GmmHmm:
    """kaldi-hmm-gmm objects from a ``final.mdl`` read by :func:`asr_kd.align.kaldi_format.read_mdl`
    and the tree it was trained with; ValueError naming ``path`` when they do not belong together."""
    topo = khg.HmmTopology()
    topo.read(mdl.topology_text())
    try:
        tm = khg.TransitionModel(ctx_dep=ctx_dep, hmm_topo=topo)
    except RuntimeError as e:
        raise ValueError(f"{path}: its topology does not fit the tree beside it ({e}); were they written "
                         "by the same training run?") from None
    if [tuple(t.__getstate__()) for t in tm.tuples] != list(mdl.tuples):
        raise ValueError(f"{path}: its transition tuples do not match the tree beside it; were they written together?")
    log_probs = np.asarray(mdl.log_probs, np.float64)
    if len(log_probs) != tm.num_transition_ids + 1:
        raise ValueError(f"{path}: {len(log_probs)} log-probs for {tm.num_transition_ids} transition ids")
    # The pickle state is (tuples, topology, state2id, id2state, id2pdf, num_pdfs, log_probs,
    # non_self_loop_log_probs); __setstate__ only takes effect on an uninitialised object.
    state = list(tm.__getstate__())
    state[6] = log_probs.tolist()
    state[7] = _non_self_loop_log_probs(tm, log_probs)
    loaded = khg.TransitionModel.__new__(khg.TransitionModel)
    loaded.__setstate__(tuple(state))
    am = khg.AmDiagGmm()
    for g in mdl.gmms or []:
        gmm = khg.DiagGmm.__new__(khg.DiagGmm)
        gmm.__setstate__((g.weights, g.inv_vars, g.means_invvars))  # recomputes the gconsts, as Kaldi's reader
        am.add_pdf(gmm)
    if am.num_pdfs != loaded.num_pdfs:
        raise ValueError(f"{path}: the AM has {am.num_pdfs} pdfs, the transition model {loaded.num_pdfs}")
    return GmmHmm(ctx_dep=ctx_dep, trans_model=loaded, am=am, topo=topo)


def _non_self_loop_log_probs(tm: Any, log_probs: np.ndarray) -> list[float]:
    """Per transition state: log(1 - P(self-loop)), 0 where there is no self-loop (as Kaldi)."""
    out = [0.0] * (tm.num_transition_states + 1)
    state2id = tm.state2id
    for tstate in range(1, tm.num_transition_states + 1):
        for tid in range(state2id[tstate], state2id[tstate + 1]):
            if tm.is_self_loop(tid):
                out[tstate] = math.log(max(1.0 - math.exp(log_probs[tid]), 1e-30))
    return out


def load_model(align_dir: str | Path) -> GmmHmm:
    """Read ``final.mdl`` (Kaldi binary or text) and ``tree`` (Kaldi binary) from a directory."""
    align_dir = Path(align_dir)
    mdl_path, tree_path = align_dir / GMM_MODEL_FILE, align_dir / GMM_TREE_FILE
    for p in (mdl_path, tree_path):
        if not p.exists():
            raise InputError(f"{p} is missing; run the align stage (--stage align); with align.source=kaldi, "
                             "align.kaldi_ali_dir needs final.mdl and tree for the graph and decode stages")
    return from_mdl(read_mdl(mdl_path), read_tree(tree_path), mdl_path)
