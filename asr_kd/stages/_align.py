"""The built-in aligner (``align.source=builtin``): monophone GMM-HMM flat start, Viterbi training
(and with ``align.context=triphone`` the tied-triphone system), alignment of every split.

Reads the lang directory, the manifests and ``features/<split>/mfcc.scp``; writes under
``<exp>/align/`` (see :mod:`asr_kd.paths`)::

    final.mdl, tree            the final model (Kaldi text model, Kaldi binary tree)
    <split>/ali.{ark,scp}      transition ids, int32, one per feature frame
    <split>/pdf.{ark,scp}      pdf ids (HMM-state labels for the DNN), int32, one per frame
    <split>/failed.txt         utterances that could not be aligned, with the reason
    mono/final.mdl, mono/tree  the monophone system, with align.context=triphone
    resume/                    receipts: a killed run resumes from its last trained system or chunk

Train, dev and test are all aligned with the final model and their reference transcripts, so
frame accuracy can be measured on speakers never seen in training. An utterance that cannot be
aligned (no features, an out-of-vocabulary word, too few frames, no path within the retry beam)
is named in ``failed.txt`` and counted by reason (:func:`asr_kd.align.viterbi.loss_reason`; those without features
were lost, and are counted, by the features stage); the stage stops, naming ``failed.txt`` and
the ``--set align.max_fail_fraction=...`` that accepts the loss, if more than
``align.max_fail_fraction`` of any split fails.

Memory: by default (the small presets) every split's features and graphs are held in memory.
At scale, as Kaldi's LibriSpeech recipe, the monophone trains on the ``align.mono_utts`` shortest
train utterances and the triphones on ``align.tri_utts`` spread over train, and the final pass
aligns every split in chunks of ``align.chunk_utts`` streamed from ``mfcc.scp``
(:mod:`asr_kd.align.stream`), in memory that does not grow with the corpus. With both subsets 0
(all of train), the chunked pass writes the same files as the in-memory one.

Resuming (:mod:`asr_kd.align.resume`): the monophone and triphone systems are checkpointed when
trained, and the chunked final pass keeps every finished chunk, each with a receipt keyed by the
inputs; a re-run of a killed stage loads what it finds and aligns only what is left, and writes
what an uninterrupted run writes.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from asr_kd.align.feats import gmm_features, read_mfcc, stream_speaker_means
from asr_kd.align.model import GmmHmm, init_monophone, save_model
from asr_kd.align.resume import final_pass_key, inputs_key, load_phase, receipt_if_current, save_phase
from asr_kd.align.stream import (ChunkReceipts, SplitTally, align_chunked, label_writers, training_subset,
                                 write_labels)
from asr_kd.align.viterbi import (NO_FEATURES, AlignResult, TrainHistory, TrainOptions, compile_graphs, lost,
                                  realign, train)
from asr_kd.config import AlignConfig, RecipeConfig
from asr_kd.data.augment import is_copy
from asr_kd.data.lang import Lang, load_lang
from asr_kd.data.manifest import Utterance
from asr_kd.fileio import file_sha256, write_json, write_text
from asr_kd.files import SPLITS
from asr_kd.paths import RunPaths
from asr_kd.errors import InputError

log = logging.getLogger(__name__)


@dataclass
class AlignSplit:
    """One split ready for alignment: features, graphs and the utterances already lost."""

    utt_ids: list[str]
    feats: dict[str, np.ndarray]  # utt -> (T, 39)
    texts: dict[str, list[str]]  # utt -> transcript words
    graphs: dict[str, Any]  # utt -> training graph (kaldifst.StdVectorFst)
    failed: dict[str, str]  # utt -> reason
    graphs_for: GmmHmm | None = None  # the model the graphs were compiled for


def train_options(cfg: AlignConfig) -> TrainOptions:
    return TrainOptions(
        num_iters=cfg.mono_iters, total_gaussians=cfg.mono_gaussians, beam=cfg.beam,
        retry_beam=cfg.retry_beam, boost_silence=cfg.boost_silence, num_jobs=cfg.num_jobs,
    )


def load_split(paths: RunPaths, split: str, lang: Lang, model: GmmHmm | None,
               utts: Sequence[Utterance] | None = None, means: Mapping[str, np.ndarray] | None = None) -> AlignSplit:
    """Features of ``split`` (MFCC + deltas, speaker CMN); graphs too once a model exists.

    ``utts``: only these (default: the split's manifest); ``means``: the speakers' means over the
    whole split (default: over the utterances loaded).
    """
    from asr_kd.data.manifest import read_manifest

    utts = read_manifest(paths.manifest(split)) if utts is None else utts
    raw, missing = read_mfcc(paths.mfcc_scp(split), [u.id for u in utts])
    failed = {u: NO_FEATURES for u in missing}
    utt2spk = {u.id: u.speaker for u in utts}
    feats = gmm_features(raw, utt2spk, means)
    texts = {u.id: u.words for u in utts}
    data = AlignSplit(utt_ids=[u.id for u in utts], feats=feats, texts=texts, graphs={}, failed=failed)
    if model is not None:
        add_graphs(data, lang, model)
    return data


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
    data.graphs_for = model
    data.failed.update(failed)


def tally_in_memory(data: AlignSplit, result: AlignResult, model: GmmHmm, silence_phones: list[int]) -> SplitTally:
    """The counts of an all-in-memory pass, as :func:`asr_kd.align.stream.align_chunked` keeps them."""
    tally = SplitTally(utterances=len(data.utt_ids), failed=dict(data.failed))
    tally.add(result, model.tid2pdf(), np.isin(model.tid2phone(), silence_phones), model.num_pdfs)
    return tally


def split_summary(tally: SplitTally) -> dict[str, Any]:
    n, failed = tally.utterances, tally.failed
    return {
        "utterances": n,
        "aligned": tally.aligned,
        "failed": len(failed),
        "success_rate": tally.aligned / n if n else 0.0,
        "frames": tally.frames,
        "silence_fraction": tally.silence_frames / tally.frames if tally.frames else 0.0,
        "loglike_per_frame": tally.loglike / tally.loglike_frames if tally.loglike_frames else None,
        "retried": tally.retried,
        "aligned_with_final_beam": tally.last_resort,
        "failed_examples": dict(sorted(failed.items())[:20]),
        "lost": lost(failed),
    }


def check_failures(split: str, summary: dict[str, Any], max_fail_fraction: float, failed_file: Path) -> None:
    """One-line :class:`InputError` when more than ``max_fail_fraction`` of ``split`` failed."""
    n, bad = summary["utterances"], summary["failed"]
    if n == 0:
        raise InputError(f"split {split!r} has no utterances; check the prepare stage's manifest")
    if bad / n > max_fail_fraction:
        needed = math.ceil(bad / n * 1000) / 1000  # the smallest 3-decimal fraction that lets them through
        counts = dict(summary.get("lost", {}).get("counts", {}))
        if bad > sum(counts.values()):
            counts["no_features"] = bad - sum(counts.values())
        reasons = ", ".join(f"{r} {c}" for r, c in counts.items())
        raise InputError(
            f"{bad} of {n} {split} utterances failed to align ({reasons or 'see the file'}), more than "
            f"align.max_fail_fraction={max_fail_fraction:g}; their ids and reasons are in {failed_file}. "
            f"Fix or remove those inputs, or accept the loss with --set align.max_fail_fraction={needed:g}"
        )


@dataclass
class Systems:
    """The trained systems as the rest of the stage needs them: the final model, the summaries of
    the monophone and triphone phases, the monophone's training history; ``train_data``: the
    training utterances still loaded (None when the systems came from receipts)."""

    model: GmmHmm
    mono_summary: dict[str, Any]
    tri_summary: dict[str, Any]
    hist: dict[str, list[Any]]  # loglike_per_frame, num_gaussians, realigned_at
    train_data: AlignSplit | None = None


def history_fields(hist: TrainHistory) -> dict[str, list[Any]]:
    """What the summary reports of a training history (JSON values, kept in the phase receipt)."""
    return {"loglike_per_frame": [float(x) for x in hist.loglike_per_frame],
            "num_gaussians": [int(x) for x in hist.num_gaussians],
            "realigned_at": [int(x) for x in hist.realigned_at]}


def train_systems(cfg: RecipeConfig, paths: RunPaths, lang: Lang, train_utts: Sequence[Utterance],
                  means: Callable[[], dict[str, np.ndarray] | None], key: str) -> Systems:
    """The monophone system (and the triphone one), each trained, or loaded from the receipt of an
    earlier run with the same inputs ``key`` (:mod:`asr_kd.align.resume`)."""
    acfg = cfg.align
    opts = train_options(acfg)
    silence = list(lang.silence_phones)
    if acfg.context == "triphone" and (tri := load_phase(paths.align_resume, "triphone", key)) is not None:
        model, receipt = tri
        return Systems(model, receipt["monophone"], receipt["triphone"], receipt["history"])
    originals = [u for u in train_utts if not is_copy(u.id)]  # augmented copies are aligned, not trained on
    train_data = None
    if (mono := load_phase(paths.align_resume, "monophone", key)) is not None:
        model, receipt = mono
        mono_summary, hist = receipt["monophone"], receipt["history"]
    else:
        mono_set = training_subset(originals, acfg.mono_utts, "shortest")
        train_data = load_split(paths, "train", lang, None, mono_set, means())
        if not train_data.feats:
            raise InputError(f"no training features found in {paths.mfcc_scp('train')}; run the features stage")
        frames = np.concatenate(list(train_data.feats.values()))  # (N, 39)
        model = init_monophone(lang.topology(), frames.mean(axis=0), frames.var(axis=0))
        del frames
        add_graphs(train_data, lang, model)
        log.info("align: %d train utterances, %d pdfs, %d passes to %d Gaussians, %d jobs",
                 len(train_data.graphs), model.num_pdfs, opts.num_iters, opts.total_gaussians, opts.num_jobs)
        hist = history_fields(train(model, train_data.graphs, train_data.feats, opts, silence))
        mono_summary = {"num_pdfs": model.num_pdfs, "num_gaussians": model.num_gauss,
                        "train_utterances": len(train_data.utt_ids)}
        save_phase(paths.align_resume, "monophone", key, model, {"monophone": mono_summary, "history": hist})
    if acfg.context != "triphone":
        return Systems(model, mono_summary, {}, hist, train_data)
    save_model(model, paths.mono_mdl, paths.mono_tree)
    final_opts = dataclasses.replace(opts, last_resort_beam=acfg.final_beam)
    tri_set = training_subset(originals, acfg.tri_utts, "spread")
    if train_data is None or [u.id for u in tri_set] != train_data.utt_ids:
        train_data = None  # the monophone's subset; the triphone system trains on its own
        train_data = load_split(paths, "train", lang, model, tri_set, means())
    # As Kaldi's align_si.sh before train_deltas.sh: the tree is built from the final monophone
    # model's alignments; their log-likelihood (and dev's) is the monophone's side of the comparison.
    mono_ali = realign(model, train_data.graphs, train_data.feats, final_opts, silence, desc="align train (mono)")
    mono_summary = {**mono_summary,
                    **monophone_loglikes(paths, lang, model, mono_ali, final_opts, silence, acfg.chunk_utts)}
    model, tri_summary = train_triphone_stage(model, train_data, mono_ali.alignments, lang, cfg, opts)
    tri_summary["tri_train_utterances"] = len(train_data.utt_ids)
    del mono_ali
    save_phase(paths.align_resume, "triphone", key, model,
               {"monophone": mono_summary, "triphone": tri_summary, "history": hist})
    return Systems(model, mono_summary, tri_summary, hist, train_data)


def align_builtin(cfg: RecipeConfig, paths: RunPaths) -> dict[str, Any]:
    """Train the monophone (and triphone) system on train or its subsets, align every split with the
    final model, write outputs; the summary. A run killed part way resumes from its last trained
    system and, in the chunked final pass, from its last finished chunk (:mod:`asr_kd.align.resume`)."""
    from asr_kd.data.manifest import read_manifest

    t0 = time.time()
    acfg = cfg.align
    lang = load_lang(paths.lang)
    silence = list(lang.silence_phones)
    final_opts = dataclasses.replace(train_options(acfg), last_resort_beam=acfg.final_beam)
    train_utts = read_manifest(paths.manifest("train"))
    # With subsets or chunks, CMN uses each speaker's whole split, read in one streaming pass first
    means = functools.cache(lambda: split_means(paths, "train", train_utts) if streamed(acfg) else None)
    key = inputs_key(cfg.align, cfg.features.num_ceps, paths.lang, {s: paths.manifest(s) for s in SPLITS},
                     {s: paths.mfcc_scp(s) for s in SPLITS})
    t_train = time.time()
    systems = train_systems(cfg, paths, lang, train_utts, means, key)
    t_train = time.time() - t_train
    model, hist = systems.model, systems.hist
    save_model(model, paths.final_mdl, paths.tree)

    train_data, systems.train_data = systems.train_data, None
    full_train = train_data if train_data is not None and train_data.utt_ids == [u.id for u in train_utts] else None
    del train_data
    final_key = final_pass_key(key, paths.final_mdl, paths.tree)
    splits: dict[str, Any] = {}
    pdf_counts = np.zeros(model.num_pdfs, dtype=np.int64)
    for split in SPLITS:
        if acfg.chunk_utts > 0:
            full_train = None  # frees the training features before the workers fork
            tally = align_split_chunked(paths, split, lang, model, train_utts, means, final_opts, silence,
                                        acfg.chunk_utts, final_key)
        else:
            # train's features as the last system's training set had them, when that was all of train
            same = split == "train" and trained_on_all(acfg, train_utts)
            tally = align_in_memory(paths, split, lang, model, full_train if split == "train" else None,
                                    final_opts, silence, means() if same else None)
        summary = split_summary(tally)
        failed_file = paths.align_failed(split)
        write_text(failed_file, "".join(f"{u} {r}\n" for u, r in sorted(tally.failed.items())))
        check_failures(split, summary, acfg.max_fail_fraction, failed_file)
        if split == "train" and tally.pdf_counts is not None:
            pdf_counts += tally.pdf_counts
        splits[split] = summary
        log.info("align %s: %d/%d aligned", split, summary["aligned"], summary["utterances"])

    return {
        "source": "builtin",
        "context": acfg.context,
        "features": "mfcc+delta+delta-delta, per-speaker CMN",
        "num_pdfs": model.num_pdfs,
        "num_gaussians": model.num_gauss,
        "num_transition_ids": int(model.trans_model.num_transition_ids),
        "success_rate": splits["train"]["success_rate"],
        "success_rate_per_split": {s: v["success_rate"] for s, v in splits.items()},
        "utterances_per_split": {s: v["utterances"] for s, v in splits.items()},
        "silence_fraction": splits["train"]["silence_fraction"],
        "pdfs_with_zero_frames": int((pdf_counts == 0).sum()),
        "loglike_per_frame": [round(x, 4) for x in hist["loglike_per_frame"]],  # monophone passes
        # Viterbi log-likelihood per frame of the final model on train and on dev (held-out voices)
        "train_loglike_per_frame": _round(splits["train"]["loglike_per_frame"]),
        "dev_loglike_per_frame": _round(splits["dev"]["loglike_per_frame"]),
        "monophone": systems.mono_summary,
        **systems.tri_summary,
        "gaussians_per_pass": hist["num_gaussians"],
        "realigned_at_passes": hist["realigned_at"],
        "final_pass": f"chunks of {acfg.chunk_utts} utterances" if acfg.chunk_utts > 0 else "in memory",
        "splits": splits,
        "train_seconds": round(t_train, 1),
        "wall_seconds": round(time.time() - t0, 1),
    }


def trained_on_all(acfg: AlignConfig, train_utts: Sequence[Utterance]) -> bool:
    """Whether the final system trained on every train utterance (no subset, no augmented copies)."""
    originals = [u for u in train_utts if not is_copy(u.id)]
    last = training_subset(originals, acfg.tri_utts, "spread") if acfg.context == "triphone" else \
        training_subset(originals, acfg.mono_utts, "shortest")
    return [u.id for u in last] == [u.id for u in train_utts]


def align_split_chunked(paths: RunPaths, split: str, lang: Lang, model: GmmHmm, train_utts: Sequence[Utterance],
                        train_means: Callable[[], dict[str, np.ndarray] | None], opts: TrainOptions,
                        silence: list[int], chunk_utts: int, key: str) -> SplitTally:
    """The final pass over ``split`` in chunks of ``chunk_utts``, resumable: a split an earlier run
    of this ``key`` finished keeps its tables (receipt ``resume/<split>.json``); otherwise the chunks
    it finished are kept and the others aligned. The chunks' files go once the split's tables are written."""
    from asr_kd.data.manifest import read_manifest

    out = (paths.ali_scp(split), paths.pdf_scp(split))
    receipt_path = paths.align_resume / f"{split}.json"
    done = receipt_if_current(receipt_path, key)
    if done is not None and done.get("tables") == table_digests(out):
        log.info("align %s: finished by an earlier run (receipt %s), keeping its labels", split, receipt_path)
        return SplitTally.from_json(done["tally"])
    utts = train_utts if split == "train" else read_manifest(paths.manifest(split))
    means = train_means() if split == "train" else None
    if means is None:
        means = split_means(paths, split, utts)
    receipts = ChunkReceipts(paths.align_resume / split, key)
    tally = align_chunked(model, lang, paths.mfcc_scp(split), utts, means, opts, silence, chunk_utts, out,
                          f"align {split}", receipts)
    write_json(receipt_path, {"key": key, "split": split, "tables": table_digests(out), "tally": tally.to_json()})
    shutil.rmtree(receipts.root, ignore_errors=True)  # their labels are in the split's tables now
    return tally


def table_digests(tables: Sequence[Path]) -> dict[str, Any] | None:
    """The scp digests and ark sizes of written tables (None when one is missing): what a split
    receipt vouches for."""
    out: dict[str, Any] = {}
    for scp in tables:
        ark = scp.with_suffix(".ark")
        if not (scp.exists() and ark.exists()):
            return None
        out[scp.name] = file_sha256(scp)
        out[ark.name] = ark.stat().st_size
    return out


def streamed(acfg: AlignConfig) -> bool:
    """Whether the stage trains on subsets or aligns in chunks (so reads features more than once)."""
    return acfg.mono_utts > 0 or acfg.tri_utts > 0 or acfg.chunk_utts > 0


def split_means(paths: RunPaths, split: str, utts: Sequence[Utterance]) -> dict[str, np.ndarray]:
    """Each speaker's MFCC mean over ``split``, read one utterance at a time."""
    means, _missing = stream_speaker_means(paths.mfcc_scp(split), [u.id for u in utts], {u.id: u.speaker for u in utts})
    return means


def align_in_memory(paths: RunPaths, split: str, lang: Lang, model: GmmHmm, data: AlignSplit | None,
                    opts: TrainOptions, silence: list[int],
                    means: Mapping[str, np.ndarray] | None = None) -> SplitTally:
    """The whole split's features and graphs in memory, aligned at once, labels written; the tally.
    ``data``: the split already loaded (train, when the final model trained on all of it); else
    loaded, normalised with the speakers' ``means`` (default: over the split)."""
    if data is None:
        data = load_split(paths, split, lang, model, means=means)
    elif data.graphs_for is not model:
        add_graphs(data, lang, model)
    result = realign(model, data.graphs, data.feats, opts, silence, desc=f"align {split}")
    with label_writers((paths.ali_scp(split), paths.pdf_scp(split))) as writers:
        write_labels(writers, result, model.tid2pdf())
    return tally_in_memory(data, result, model, silence)


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def monophone_loglikes(paths: RunPaths, lang: Lang, mono: GmmHmm, train_ali: AlignResult, opts: TrainOptions,
                       silence: list[int], chunk_utts: int) -> dict[str, Any]:
    """The final monophone model's Viterbi log-likelihood per frame on train (``train_ali``: its
    training utterances) and dev (in chunks of ``chunk_utts`` when > 0)."""
    from asr_kd.data.manifest import read_manifest

    if chunk_utts > 0:
        dev_utts = read_manifest(paths.manifest("dev"))
        dev = align_chunked(mono, lang, paths.mfcc_scp("dev"), dev_utts, split_means(paths, "dev", dev_utts), opts,
                            silence, chunk_utts, None, "align dev (mono)")
        dev_ll = dev.loglike / dev.loglike_frames if dev.loglike_frames else None
    else:
        data = load_split(paths, "dev", lang, mono)
        dev_ali = realign(mono, data.graphs, data.feats, opts, silence, desc="align dev (mono)")
        dev_ll = dev_ali.loglike / dev_ali.frames if dev_ali.frames else None
    return {
        "train_loglike_per_frame": _round(train_ali.loglike / train_ali.frames if train_ali.frames else None),
        "dev_loglike_per_frame": _round(dev_ll),
    }


def train_triphone_stage(
    mono: GmmHmm, data: AlignSplit, mono_alignments: dict[str, np.ndarray], lang: Lang, cfg: RecipeConfig,
    opts: TrainOptions,
) -> tuple[GmmHmm, dict[str, Any]]:
    """Tied-triphone tree + triphone GMM training from the monophone alignments (asr_kd.align.triphone)."""
    from asr_kd.align.triphone import train_triphone_from_config

    tri = train_triphone_from_config(mono, data.feats, mono_alignments, data.texts, lang, cfg.align, opts)
    return tri.model, tri.summary
