"""The built-in aligner (``align.source=builtin``): monophone GMM-HMM flat start, Viterbi training
(and with ``align.context=triphone`` the tied-triphone system), alignment of every split.

Reads the lang directory, the manifests and ``features/<split>/mfcc.scp``; writes under
``<exp>/align/`` (see :mod:`asr_kd.paths`)::

    final.mdl, tree            the final model (Kaldi text model, Kaldi binary tree)
    <split>/ali.{ark,scp}      transition ids, int32, one per feature frame
    <split>/pdf.{ark,scp}      pdf ids (HMM-state labels for the DNN), int32, one per frame
    <split>/failed.txt         utterances that could not be aligned, with the reason
    mono/final.mdl, mono/tree  the monophone system, with align.context=triphone

Train, dev and test are all aligned with the final model and their reference transcripts, so
frame accuracy can be measured on speakers never seen in training. An utterance that cannot be
aligned (no features, an out-of-vocabulary word, too few frames, no path within the retry beam)
is named in ``failed.txt`` and counted by reason (:func:`asr_kd.align.viterbi.loss_reason`; those without features
were lost, and are counted, by the features stage); the stage stops, naming ``failed.txt`` and
the ``--set align.max_fail_fraction=...`` that accepts the loss, if more than
``align.max_fail_fraction`` of any split fails.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from asr_kd.align.feats import gmm_features, read_mfcc
from asr_kd.align.model import GmmHmm, init_monophone, save_model
from asr_kd.align.viterbi import NO_FEATURES, AlignResult, TrainOptions, compile_graphs, lost, realign, train
from asr_kd.config import AlignConfig, RecipeConfig
from asr_kd.data.lang import Lang, load_lang
from asr_kd.fileio import write_text
from asr_kd.paths import SPLITS, RunPaths
from asr_kd.runner import StageError

log = logging.getLogger(__name__)


@dataclass
class AlignSplit:
    """One split ready for alignment: features, graphs and the utterances already lost."""

    utt_ids: list[str]
    feats: dict[str, np.ndarray]  # utt -> (T, 39)
    texts: dict[str, list[str]]  # utt -> transcript words
    graphs: dict[str, Any]  # utt -> training graph (kaldifst.StdVectorFst)
    failed: dict[str, str]  # utt -> reason


def train_options(cfg: AlignConfig) -> TrainOptions:
    return TrainOptions(
        num_iters=cfg.mono_iters, total_gaussians=cfg.mono_gaussians, beam=cfg.beam,
        retry_beam=cfg.retry_beam, boost_silence=cfg.boost_silence, num_jobs=cfg.num_jobs,
    )


def load_split(paths: RunPaths, split: str, lang: Lang, model: GmmHmm | None) -> AlignSplit:
    """Features of ``split`` (MFCC + deltas, speaker CMN); graphs too once a model exists."""
    from asr_kd.data.manifest import read_manifest

    utts = read_manifest(paths.manifest(split))
    raw, missing = read_mfcc(paths.mfcc_scp(split), [u.id for u in utts])
    failed = {u: NO_FEATURES for u in missing}
    utt2spk = {u.id: u.speaker for u in utts}
    feats = gmm_features(raw, utt2spk)
    texts = {u.id: u.words for u in utts}
    data = AlignSplit(utt_ids=[u.id for u in utts], feats=feats, texts=texts, graphs={}, failed=failed)
    if model is not None:
        add_graphs(data, lang, model)
    return data


def originals_only(data: AlignSplit) -> AlignSplit:
    """``data`` without the augmented copies (asr_kd.data.augment): the GMMs train on the original
    recordings, as Kaldi's recipes do, and then align the copies. ``data`` itself when it has none."""
    from asr_kd.data.augment import is_copy

    keep = [u for u in data.utt_ids if not is_copy(u)]
    if len(keep) == len(data.utt_ids):
        return data
    ids = set(keep)
    return AlignSplit(utt_ids=keep, feats={u: f for u, f in data.feats.items() if u in ids},
                      texts={u: t for u, t in data.texts.items() if u in ids}, graphs={},
                      failed={u: r for u, r in data.failed.items() if u in ids})


def add_graphs(data: AlignSplit, lang: Lang, model: GmmHmm) -> None:
    """Compile training graphs for the utterances with features; OOV utterances are failures."""
    transcripts: dict[str, list[int]] = {}
    for utt in data.feats:
        try:
            transcripts[utt] = lang.word_ids(data.texts[utt])
        except KeyError as e:
            data.failed[utt] = f"word {e.args[0]!r} not in words.txt"
    graphs, failed = compile_graphs(model, lang.read_l_fst(), lang.disambig_phones, transcripts)
    data.graphs = graphs
    data.failed.update(failed)


def write_alignments(paths: RunPaths, split: str, result: AlignResult, tid2pdf: np.ndarray) -> None:
    """``ali.{ark,scp}`` (transition ids) and ``pdf.{ark,scp}`` (pdf ids), int32, sorted by utterance."""
    from asr_kd.data.scp import ark_scp_writer

    with ark_scp_writer(paths.ali_scp(split)) as ali_out, ark_scp_writer(paths.pdf_scp(split)) as pdf_out:
        for utt in sorted(result.alignments):
            tids = result.alignments[utt].astype(np.int32)  # (T,)
            ali_out.write(utt, tids)
            pdf_out.write(utt, tid2pdf[tids].astype(np.int32))


def split_summary(data: AlignSplit, result: AlignResult, model: GmmHmm, silence_phones: list[int]) -> dict[str, Any]:
    failed = {**data.failed, **result.failed}
    n = len(data.utt_ids)
    frames = sum(len(a) for a in result.alignments.values())
    tid2phone = model.tid2phone()
    sil = sum(int(np.isin(tid2phone[a], silence_phones).sum()) for a in result.alignments.values())
    return {
        "utterances": n,
        "aligned": len(result.alignments),
        "failed": len(failed),
        "success_rate": len(result.alignments) / n if n else 0.0,
        "frames": frames,
        "silence_fraction": sil / frames if frames else 0.0,
        "loglike_per_frame": result.loglike / result.frames if result.frames else None,
        "retried": result.retried,
        "aligned_with_final_beam": result.last_resort,
        "failed_examples": dict(sorted(failed.items())[:20]),
        "lost": lost(failed),
    }


def check_failures(split: str, summary: dict[str, Any], max_fail_fraction: float, failed_file: Path) -> None:
    """One-line :class:`StageError` when more than ``max_fail_fraction`` of ``split`` failed."""
    n, bad = summary["utterances"], summary["failed"]
    if n == 0:
        raise StageError(f"split {split!r} has no utterances; check the prepare stage's manifest")
    if bad / n > max_fail_fraction:
        needed = math.ceil(bad / n * 1000) / 1000  # the smallest 3-decimal fraction that lets them through
        counts = dict(summary.get("lost", {}).get("counts", {}))
        if bad > sum(counts.values()):
            counts["no_features"] = bad - sum(counts.values())
        reasons = ", ".join(f"{r} {c}" for r, c in counts.items())
        raise StageError(
            f"{bad} of {n} {split} utterances failed to align ({reasons or 'see the file'}), more than "
            f"align.max_fail_fraction={max_fail_fraction:g}; their ids and reasons are in {failed_file}. "
            f"Fix or remove those inputs, or accept the loss with --set align.max_fail_fraction={needed:g}"
        )


def align_builtin(cfg: RecipeConfig, paths: RunPaths) -> dict[str, Any]:
    """Train the monophone system on train, align every split with it, write outputs; the summary."""
    t0 = time.time()
    lang = load_lang(paths.lang)
    opts = train_options(cfg.align)
    train_all = load_split(paths, "train", lang, None)
    train_data = originals_only(train_all)  # augmented copies are aligned, not trained on
    if not train_data.feats:
        raise StageError(f"no training features found in {paths.mfcc_scp('train')}; run the features stage")
    frames = np.concatenate(list(train_data.feats.values()))  # (N, 39)
    model = init_monophone(lang.topology(), frames.mean(axis=0), frames.var(axis=0))
    del frames
    add_graphs(train_data, lang, model)
    log.info("align: %d train utterances, %d pdfs, %d passes to %d Gaussians, %d jobs",
             len(train_data.graphs), model.num_pdfs, opts.num_iters, opts.total_gaussians, opts.num_jobs)
    silence = list(lang.silence_phones)
    t_train = time.time()
    hist = train(model, train_data.graphs, train_data.feats, opts, silence)
    mono_summary: dict[str, Any] = {"num_pdfs": model.num_pdfs, "num_gaussians": model.num_gauss}
    tri_summary: dict[str, Any] = {}
    final_opts = dataclasses.replace(opts, last_resort_beam=cfg.align.final_beam)
    if cfg.align.context == "triphone":
        save_model(model, paths.mono_mdl, paths.mono_tree)
        # As Kaldi's align_si.sh before train_deltas.sh: the tree is built from the final monophone
        # model's alignments; their log-likelihood (and dev's) is the monophone's side of the comparison.
        mono_ali = realign(model, train_data.graphs, train_data.feats, final_opts, silence, desc="align train (mono)")
        mono_summary.update(monophone_loglikes(paths, lang, model, mono_ali, final_opts, silence))
        model, tri_summary = train_triphone_stage(model, train_data, mono_ali.alignments, lang, cfg, opts)
    t_train = time.time() - t_train
    save_model(model, paths.final_mdl, paths.tree)

    tid2pdf = model.tid2pdf()
    splits: dict[str, Any] = {}
    pdf_counts = np.zeros(model.num_pdfs, dtype=np.int64)
    for split in SPLITS:
        data = load_split(paths, split, lang, model) if split != "train" else train_data
        if split == "train" and train_all is not train_data:
            data = train_all
            add_graphs(data, lang, model)
        result = realign(model, data.graphs, data.feats, final_opts, silence, desc=f"align {split}")
        write_alignments(paths, split, result, tid2pdf)
        summary = split_summary(data, result, model, silence)
        failed_file = paths.align_failed(split)
        failed = {**data.failed, **result.failed}
        write_text(failed_file, "".join(f"{u} {r}\n" for u, r in sorted(failed.items())))
        check_failures(split, summary, cfg.align.max_fail_fraction, failed_file)
        if split == "train":
            for ali in result.alignments.values():
                pdf_counts += np.bincount(tid2pdf[ali], minlength=model.num_pdfs)
        splits[split] = summary
        log.info("align %s: %d/%d aligned", split, summary["aligned"], summary["utterances"])

    return {
        "source": "builtin",
        "context": cfg.align.context,
        "features": "mfcc+delta+delta-delta, per-speaker CMN",
        "num_pdfs": model.num_pdfs,
        "num_gaussians": model.num_gauss,
        "num_transition_ids": int(model.trans_model.num_transition_ids),
        "success_rate": splits["train"]["success_rate"],
        "success_rate_per_split": {s: v["success_rate"] for s, v in splits.items()},
        "utterances_per_split": {s: v["utterances"] for s, v in splits.items()},
        "silence_fraction": splits["train"]["silence_fraction"],
        "pdfs_with_zero_frames": int((pdf_counts == 0).sum()),
        "loglike_per_frame": [round(x, 4) for x in hist.loglike_per_frame],  # monophone passes
        # Viterbi log-likelihood per frame of the final model on train and on dev (held-out voices)
        "train_loglike_per_frame": _round(splits["train"]["loglike_per_frame"]),
        "dev_loglike_per_frame": _round(splits["dev"]["loglike_per_frame"]),
        "monophone": mono_summary,
        **tri_summary,
        "gaussians_per_pass": hist.num_gaussians,
        "realigned_at_passes": hist.realigned_at,
        "splits": splits,
        "train_seconds": round(t_train, 1),
        "wall_seconds": round(time.time() - t0, 1),
    }


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def monophone_loglikes(paths: RunPaths, lang: Lang, mono: GmmHmm, train_ali: AlignResult, opts: TrainOptions,
                       silence: list[int]) -> dict[str, Any]:
    """The final monophone model's Viterbi log-likelihood per frame on train (``train_ali``) and dev."""
    dev = load_split(paths, "dev", lang, mono)
    dev_ali = realign(mono, dev.graphs, dev.feats, opts, silence, desc="align dev (mono)")
    return {
        "train_loglike_per_frame": _round(train_ali.loglike / train_ali.frames if train_ali.frames else None),
        "dev_loglike_per_frame": _round(dev_ali.loglike / dev_ali.frames if dev_ali.frames else None),
    }


def train_triphone_stage(
    mono: GmmHmm, data: AlignSplit, mono_alignments: dict[str, np.ndarray], lang: Lang, cfg: RecipeConfig,
    opts: TrainOptions,
) -> tuple[GmmHmm, dict[str, Any]]:
    """Tied-triphone tree + triphone GMM training from the monophone alignments (asr_kd.align.triphone).

    The split's training graphs are recompiled for the triphone model (its transition ids differ).
    """
    from asr_kd.align.triphone import train_triphone_from_config

    tri = train_triphone_from_config(mono, data.feats, mono_alignments, data.texts, lang, cfg.align, opts)
    add_graphs(data, lang, tri.model)
    return tri.model, tri.summary
