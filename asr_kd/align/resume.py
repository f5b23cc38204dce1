"""What lets a killed align stage resume (``align.source=builtin``): receipts of the trained
systems and of the final pass's finished chunks.

Under ``<exp>/align/resume/`` (:attr:`asr_kd.paths.RunPaths.align_resume`)::

    monophone.json .model       the trained monophone system: receipt, exact model state
    triphone.json .model        the trained triphone system (align.context=triphone)
    <split>/chunk-NNNNNN.json   a finished chunk of the final pass (align.chunk_utts > 0): its ids and counts
    <split>/chunk-NNNNNN.{ali,pdf}.{ark,scp}   its labels, until the split's ali/pdf tables are written
    <split>.json                a finished split: its ali/pdf tables (their scp digests) and its counts

A phase receipt holds what the stage summary needs of that phase (the monophone's training
history, the systems' summaries); its ``.model`` file is the model's exact state (pickled
kaldi-hmm-gmm objects: ``final.mdl``'s text form is Kaldi's, but reading it back recomputes some
derived numbers in another precision, and a resumed run must align to the last bit as an
uninterrupted one). A receipt is written after the files it vouches for, atomically, and holds a
key; one with another key is ignored and its work redone:

* :func:`inputs_key` (the phases): the align config less ``num_jobs`` and ``max_fail_fraction``
  (where the work runs, and what loss is accepted: a run stopped by too many failures resumes
  with ``--set align.max_fail_fraction=...``), ``features.num_ceps``, the manifests, the lang
  directory's files and the MFCC tables (scp bytes, ark size and time);
* :func:`final_pass_key` (the chunks, the splits): that, and the final model's files.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from collections.abc import Mapping
from typing import Any

from asr_kd.align.model import GmmHmm
from asr_kd.config import AlignConfig
from asr_kd.work import key as work_key
from asr_kd.work import record
from asr_kd.fileio import atomic_open, file_sha256, read_json, write_json
from asr_kd.files import SPLITS

log = logging.getLogger(__name__)

def _stat(path: Path) -> list[int] | None:
    if not path.exists():
        return None
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def inputs_key(align_cfg: AlignConfig, num_ceps: int, lang_dir: Path, manifests: Mapping[str, Path],
               mfcc_scps: Mapping[str, Path]) -> str:
    """What the trained systems depend on (see the module docstring); hashes small files only.

    ``lang_dir``: the lang the systems are trained with; ``manifests`` and ``mfcc_scps``: each split's
    (train, dev, test)."""
    align = record(align_cfg)  # without the keys that do not change what is computed (asr_kd.work.WHERE)
    lang = {str(f.relative_to(lang_dir)): file_sha256(f)
            for f in sorted(lang_dir.rglob("*")) if f.is_file() and f.name != "DONE.json"}
    data = {}
    for split in SPLITS:
        scp = mfcc_scps[split]
        data[split] = {"manifest": file_sha256(manifests[split]),
                       "mfcc_scp": file_sha256(scp) if scp.exists() else None,
                       "mfcc_ark": _stat(scp.with_suffix(".ark"))}
    return work_key({"align": align, "num_ceps": num_ceps, "lang": lang, "data": data})


def final_pass_key(inputs: str, mdl: Path, tree: Path) -> str:
    """The final pass's key: the inputs and the model it aligns with (its files' digests)."""
    return work_key({"inputs": inputs, "final.mdl": file_sha256(mdl), "tree": file_sha256(tree)})


def receipt_if_current(path: Path, key: str) -> dict[str, Any] | None:
    """The receipt at ``path`` when it holds ``key``; None when absent, unreadable or of another key."""
    if not path.exists():
        return None
    try:
        receipt = read_json(path)
    except ValueError:  # a receipt is written atomically; this is someone else's file
        log.warning("%s is not a JSON receipt; ignoring it", path)
        return None
    return receipt if receipt.get("key") == key else None


def save_phase(resume_dir: Path, phase: str, key: str, model: GmmHmm, info: dict[str, Any]) -> None:
    """Checkpoint a trained system in ``resume_dir``: ``<phase>.model`` (exact state), then
    ``<phase>.json`` (key, ``info``)."""
    with atomic_open(resume_dir / f"{phase}.model", "wb") as f:
        pickle.dump(model, f, protocol=pickle.HIGHEST_PROTOCOL)
    write_json(resume_dir / f"{phase}.json", {"key": key, "phase": phase, **info})


def load_phase(resume_dir: Path, phase: str, key: str) -> tuple[GmmHmm, dict[str, Any]] | None:
    """The system ``phase`` an earlier run with ``key`` left in ``resume_dir``, and its receipt; None
    when there is none."""
    receipt_path = resume_dir / f"{phase}.json"
    receipt = receipt_if_current(receipt_path, key)
    model_path = resume_dir / f"{phase}.model"
    if receipt is None or not model_path.exists():
        return None
    with open(model_path, "rb") as f:
        model = pickle.load(f)  # our own run directory's file, written by save_phase
    log.info("align: %s system found (receipt %s), skipping its training", phase, receipt_path)
    return model, receipt
