"""The export stage's work on a run directory: a model directory (:mod:`asr_kd.decoding.modeldir`)
per deployable system that was decoded, its model card, and what each costs to run."""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from asr_kd.decoding.modeldir import (
    EXPORT_ATOL,
    ExportSources,
    OnnxPosteriors,
    card_scores,
    export_model_dir,
    measure_rtf,
    model_card,
    onnx_unavailable,
)
from asr_kd.files import ModelDir

log = logging.getLogger(__name__)

def deployable_systems(cfg: Any, paths: Any) -> list[Any]:
    """The systems worth shipping: teacher 0 (the baseline), the ensemble, every student."""
    from asr_kd.stages._decode import discover_systems

    return [s for s in discover_systems(cfg, paths)
            if s.name in ("teacher-0", "ensemble") or s.name.startswith("distilled_T")]


def export_systems(cfg: Any, paths: Any, training: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``<exp>/models/<system>/`` for every deployable system that was decoded, then measure
    each acoustic model's inference cost on one CPU thread (TorchScript, and ONNX Runtime where
    am.onnx was written); ``models/index.json`` lists them. Without onnx/onnxruntime, am.onnx is
    skipped: logged, and counted by reason in the summary (``onnx.skipped``). Each directory gets a
    model card (:func:`model_card`); ``training`` describes the training data for it (see there)."""
    from asr_kd.decoding.stats import UttCounts
    from asr_kd.stages._decode import read_split, train_log_priors
    from asr_kd.fileio import read_json, write_json
    from asr_kd.nn.ensemble import load_teachers
    from asr_kd.nn.models import load_model as load_dnn
    from asr_kd.errors import InputError

    test = read_split(paths, "test", max_utts=8)
    check = test.feats[test.utts[0]]
    timing_feats = np.concatenate([test.feats[u] for u in test.utts])  # a few utterances: >= ~10 s
    cmvn = read_json(paths.cmvn)
    onnx_skipped = onnx_unavailable()
    if onnx_skipped:
        log.warning("am.onnx is not written: %s; the model directories hold TorchScript only", onnx_skipped)
    rows, index = [], {}
    onnx_graphs: dict[tuple, Path] = {}  # architecture -> the first am.onnx written for it
    for system in deployable_systems(cfg, paths):
        summary_file = paths.decode_summary(system.name)
        if not summary_file.exists():
            raise InputError(f"{summary_file} is missing: {system.name} was not decoded; re-run the decode stage "
                             "(--stage decode)")
        decoded = read_json(summary_file)
        if len(system.model_files) > 1:
            net, mean = load_teachers(system.model_files, cfg.distill.ensemble_mean).stacked, cfg.distill.ensemble_mean
        else:
            net, mean = load_dnn(system.model_files[0])[0], "arithmetic"
        src = ExportSources(copies=_shared_files(paths),
                            log_priors=train_log_priors(paths, _num_outputs(net)), cmvn_global=cmvn["global"],
                            features={"num_mel_bins": cfg.features.num_mel_bins,
                                      "frame_length_ms": cfg.features.frame_length_ms,
                                      "frame_shift_ms": cfg.features.frame_shift_ms,
                                      "sample_rate": cfg.data.sample_rate},
                            cmvn_mode=cfg.features.cmvn)
        out = paths.model_dir(system.name)
        arch = (type(net).__name__, mean, tuple((k, tuple(v.shape)) for k, v in net.state_dict().items()))
        counts_file = paths.decode_utt_counts(system.name)
        scores = card_scores(UttCounts.from_json(read_json(counts_file)) if counts_file.exists() else None, decoded)
        card = _card_writer(cfg, system.name, training or {}, scores)
        t0 = time.perf_counter()
        info = export_model_dir(system.name, net, out, src, left=cfg.model.left_context,
                                right=cfg.model.right_context, mean=mean, acoustic_scale=decoded["acoustic_scale"],
                                search={"beam": cfg.decode.beam, "max_active": cfg.decode.max_active,
                                        "lattice_beam": cfg.decode.lattice_beam, "decoder": cfg.decode.decoder},
                                check_feats=check,
                                extra={"test_wer": decoded.get("wer"), "test_frame_acc": decoded.get("frame_acc"),
                                       "dev_frame_acc": decoded.get("dev_frame_acc")},
                                onnx_skipped=onnx_skipped, onnx_like=onnx_graphs.get(arch), card=card)
        am_info = info["acoustic_model"]
        if am_info["onnx"]["file"]:
            onnx_graphs.setdefault(arch, ModelDir(out).am_onnx)
        log.info("%s: %s written in %.1f s (%s)", system.name, out, time.perf_counter() - t0,
                 f"am.onnx {am_info['onnx']['graph']}, within {am_info['onnx']['max_abs_diff']:.1e} of PyTorch"
                 if am_info["onnx"]["file"] else "TorchScript only")
        rows.append({"system": system.name, "params": am_info["params"],
                     "mflops_per_frame": am_info["mflops_per_frame"], **_inference_cost(out, timing_feats),
                     "wer": decoded.get("wer"), "frame_acc": decoded.get("frame_acc"),
                     "torchscript_max_abs_diff": am_info["torchscript_max_abs_diff"],
                     "onnx_max_abs_diff": am_info["onnx"].get("max_abs_diff")})
        index[system.name] = {"dir": system.name, "dev_frame_acc": decoded.get("dev_frame_acc"), "wer": decoded.get("wer")}
    students = {n: v for n, v in index.items() if n.startswith("distilled_T") and v["dev_frame_acc"] is not None}
    best = max(students, key=lambda n: students[n]["dev_frame_acc"]) if students else None
    write_json(paths.models_index, {"systems": index, "best_student": best,
                                    "default": best or next(iter(index), None)})
    written = sum(r["onnx_max_abs_diff"] is not None for r in rows)
    return {"systems": rows, "best_student": best, "timing_frames": int(len(timing_feats)),
            "threads": 1,
            "onnx": {"written": written, "skipped": {onnx_skipped: len(rows) - written} if written < len(rows) else {},
                     "max_abs_diff": max((r["onnx_max_abs_diff"] for r in rows if r["onnx_max_abs_diff"] is not None),
                                         default=None), "atol": EXPORT_ATOL}}


def system_description(cfg: Any, name: str) -> str:
    """One sentence on what a deployable system is, for its card."""
    m = cfg.model
    net = (f"a feed-forward DNN of {m.hidden_layers} ReLU hidden layers of {m.hidden_dim} units "
           f"({m.left_context} frames of left and {m.right_context} of right context)")
    if name == "ensemble":
        return (f"The ensemble: {cfg.teachers.num_teachers} teachers, each {net} trained on the hard (forced-"
                f"alignment) targets from its own seed, combined by the {cfg.distill.ensemble_mean} mean of "
                "their softmaxes.")
    if name.startswith("teacher-"):
        return f"Teacher {name.split('-', 1)[1]} of the ensemble (the baseline): {net}, trained on the hard targets."
    if name.startswith("distilled_T"):
        return (f"A student distilled from the ensemble of {cfg.teachers.num_teachers} teachers at temperature "
                f"T = {name[len('distilled_T'):]} (Hinton, Vinyals & Dean 2015): {net}, trained on the hard "
                "targets and the ensemble's tempered soft targets, one network as cheap as a single teacher.")
    return f"The system {name}: {net}."


def _card_writer(cfg: Any, name: str, training: dict[str, Any],
                 scores: dict[str, Any]) -> Callable[[dict[str, Any], int], str]:
    what = system_description(cfg, name)
    return lambda info, size: model_card(info, size, what=what, training=training, scores=scores)


def _inference_cost(model_dir: Path, feats: np.ndarray) -> dict[str, Any]:
    """measure_rtf of the directory's TorchScript network, and ``onnx_*_rtf`` of its ONNX one
    through onnxruntime (None without am.onnx)."""
    md = ModelDir(model_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        cost = measure_rtf(torch.jit.load(str(md.am)).eval(), feats)
    onnx_cost = measure_rtf(OnnxPosteriors(md.am_onnx, threads=1), feats) if md.am_onnx.exists() else {}
    for key in ("whole_utterance_rtf", "streaming_batch1_rtf"):
        cost[f"onnx_{key}"] = onnx_cost.get(key)
    return cost


def _shared_files(paths: Any) -> dict[str, Path]:
    """The run's files every model directory holds a copy of: model-dir name -> the run's file."""
    from asr_kd.files import GraphDir, LangDir

    md, graph, lang = ModelDir(Path(".")), GraphDir(paths.graph), LangDir(paths.decode_lang)
    return {md.hclg.name: graph.hclg, md.words.name: graph.words, md.final_mdl.name: paths.final_mdl,
            md.tree.name: paths.tree, md.phones.name: lang.phones, md.lexicon.name: lang.lexicon}


def _num_outputs(net: nn.Module) -> int:
    return int(getattr(net, "num_pdfs"))
