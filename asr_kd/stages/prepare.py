"""The prepare stage: the corpus -> ``prepare/manifest-<split>.jsonl``.

The corpus readers (:mod:`data_prep.librispeech`, :mod:`data_prep.kaldi`,
:mod:`data_prep.lhotse_corpus`) take plain arguments and return the manifest; this stage chooses
the corpus (``--data-root``, or the synthetic corpus it generates once), its format
(``data.format``, or detected: :func:`data_prep.formats.detect_format`), what makes each split
and the shortest usable audio, writes the manifests, and turns the reader's
:class:`~data_prep.librispeech.CorpusError` into a :class:`~asr_kd.runner.StageError`. Audio a
Kaldi or lhotse corpus cannot give as a plain 16 kHz file (pipes, segments, other rates) is
written once under ``prepare/audio/<split>/`` and named by the manifest.

``augment.*`` adds augmented copies of the training utterances (:mod:`asr_kd.data.augment`) once the
manifests are written, under ``prepare/augment/``; the summary counts them, and the time they took
(``augment_s``).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asr_kd.config import AugmentConfig, DataConfig, RecipeConfig
from asr_kd.paths import SPLITS, RunPaths
from asr_kd.runner import StageError
from asr_kd.work import Keyed, take

DOC = "corpus -> manifests"
AFTER = ()


@dataclass(frozen=True)
class Work:
    """What the manifests depend on: the corpus and how it is read, and the augmented copies. Not
    data.extra_test_subsets (the conditions stage's) or data.lm_vocab_size (lang's); not the
    shortest usable audio (:func:`min_utterance_samples`, deliberately)."""

    root: str
    format: str
    synthetic_size: str
    synthetic_seed: int
    synthetic_dir: str
    synthetic_text: str
    train_subsets: tuple[str, ...]
    dev_subsets: tuple[str, ...]
    test_subsets: tuple[str, ...]
    max_utts_per_split: int
    sample_rate: int
    oov_policy: str
    extra_lexicon: str
    lm_text: str
    augment: AugmentConfig


def work(cfg: RecipeConfig) -> Work:
    return take(Work, cfg.data, augment=cfg.augment)


def corpus_root(cfg: RecipeConfig) -> Path:
    """The corpus this run reads: --data-root, or the embedded synthetic corpus."""
    if cfg.data.root:
        return Path(cfg.data.root)
    d = cfg.data
    return Path(d.synthetic_dir) / (f"synthetic-{d.synthetic_size}-seed{d.synthetic_seed}"
                                    + ("" if d.synthetic_text == "template" else f"-{d.synthetic_text}"))


def synthetic_utterances(cfg: RecipeConfig) -> dict[str, int]:
    """Utterances per split of the synthetic corpus ``cfg`` generates (train, dev, test)."""
    from data_prep.synthetic import SIZES

    spec = SIZES[cfg.data.synthetic_size]
    return {split: sum(spec.speakers[split].values()) * spec.utts_per_speaker[split] for split in ("train", "dev", "test")}


def synthetic_seconds_per_utterance(cfg: RecipeConfig) -> dict[str, float] | None:
    """Mean seconds of an utterance per split where the text makes them longer than the template's
    (the books text: ``data_prep.book_text.SECONDS_PER_UTTERANCE``); None for the template."""
    if cfg.data.synthetic_text != "books":
        return None
    from data_prep.book_text import SECONDS_PER_UTTERANCE

    return dict(SECONDS_PER_UTTERANCE)


def synthetic_lm_text(cfg: RecipeConfig) -> Path:
    """Where the synthetic corpus ``cfg`` generates keeps its LM text."""
    from data_prep.synthetic import LM_TEXT_NAME

    return corpus_root(cfg) / LM_TEXT_NAME


def corpus_format(cfg: RecipeConfig) -> tuple[str, bool]:
    """(the format this run reads, whether it was detected): data.format, or for ``auto`` the one
    :func:`data_prep.formats.detect_format` finds under --data-root; the synthetic corpus is LibriSpeech."""
    from data_prep.formats import detect_format

    if cfg.data.format != "auto":
        return cfg.data.format, False
    if not cfg.data.root:
        return "librispeech", True
    return detect_format(Path(cfg.data.root)), True


def split_subsets(cfg: RecipeConfig, fmt: str = "librispeech") -> dict[str, tuple[str, ...]]:
    """What makes each split (subset dirs, Kaldi data dirs, lhotse parts): data.{train,dev,test}_subsets
    where given, else the corpus's own (:func:`data_prep.formats.default_splits`): the synthetic
    corpus's (also when it is passed as --data-root, recognised by its marker), LibriSpeech's
    train-clean-100 / dev-clean / test-clean, or train / dev / test for Kaldi and lhotse."""
    from data_prep.formats import default_splits

    own = default_splits(fmt, Path(cfg.data.root) if cfg.data.root else None)
    d = cfg.data
    given = {"train": d.train_subsets, "dev": d.dev_subsets, "test": d.test_subsets}
    return {split: tuple(given[split]) or own[split] for split in SPLITS}


def min_utterance_samples(cfg: RecipeConfig) -> int:
    """Samples an utterance needs for one DNN input window (left + 1 + right frames; 0.275 s with
    the defaults). Shorter audio is skipped by prepare as too_short.

    Not part of prepare's config keys on purpose: the windows are edge-padded, so this is a floor
    for usable audio, and a changed model context must not re-run the data preparation."""
    from asr_kd.data.features import samples_for_frames

    frames = cfg.model.left_context + 1 + cfg.model.right_context
    return samples_for_frames(frames, cfg.data.sample_rate, cfg.features)


def prepare_manifests(root: Path, subsets: dict[str, tuple[str, ...]], paths: RunPaths, data: DataConfig,
                      min_samples: int = 1, fmt: str = "librispeech") -> dict[str, Any]:
    """Read the corpus under ``root`` (format ``fmt``) and write ``paths.manifest(split)`` for each
    split; the summary. Audio written by an earlier run of the stage is removed first. Raises the
    reader's :class:`~data_prep.librispeech.CorpusError`."""
    from asr_kd.data.manifest import write_manifest
    from data_prep.formats import read_formatted_corpus

    shutil.rmtree(paths.prepared_audio, ignore_errors=True)
    corpus = read_formatted_corpus(fmt, root, subsets, paths.prepared_audio, sample_rate=data.sample_rate,
                                   extra_lexicon=data.extra_lexicon, oov_policy=data.oov_policy,
                                   max_utts_per_split=data.max_utts_per_split, lm_text=data.lm_text,
                                   min_samples=min_samples)
    for split, utts in corpus.splits.items():
        write_manifest(paths.manifest(split), utts)
    return corpus.summary


def augment_training_set(cfg: RecipeConfig, paths: RunPaths) -> dict[str, Any]:
    """Add ``augment.*``'s copies of the training utterances to the training manifest."""
    from asr_kd.data.augment import AugmentSettings, augment_train
    from asr_kd.data.manifest import read_manifest, write_manifest
    from asr_kd.fileio import read_json, write_json

    t0 = time.time()
    a = cfg.augment
    key = Keyed.of(a)  # the copies depend on augment.* (not on its workers: asr_kd.work.WHERE)
    key_file = paths.augmented_audio / "key.json"
    if paths.augmented_audio.exists() and not (key_file.exists() and key.matches(read_json(key_file))):
        shutil.rmtree(paths.augmented_audio)  # copies made with other settings
    paths.augmented_audio.mkdir(parents=True, exist_ok=True)
    write_json(key_file, key.stored())
    originals = read_manifest(paths.manifest("train"))
    settings = AugmentSettings(speeds=tuple(a.speeds), reverb_copies=a.reverb_copies, rt60_s=tuple(a.rt60_s),
                               snr_db=tuple(a.snr_db), seed=a.seed, sample_rate=cfg.data.sample_rate,
                               pitch_copies=a.pitch_copies, pitch_cents=tuple(a.pitch_cents))
    copies, summary = augment_train(originals, paths.augmented_audio, settings,
                                    min_samples=min_utterance_samples(cfg), jobs=a.num_workers)
    write_manifest(paths.manifest("train"), [*originals, *copies])
    return {**summary, "augment_s": round(time.time() - t0, 1)}


def run(cfg: RecipeConfig, paths: RunPaths) -> dict[str, Any]:
    """Manifests of train, dev and test; bad input (unusable audio included) named and counted."""
    from data_prep.librispeech import CorpusError
    from data_prep.synthetic import ensure_corpus

    root = corpus_root(cfg)
    generation_s = None
    try:
        if not cfg.data.root:
            t0 = time.time()
            ensure_corpus(root, size=cfg.data.synthetic_size, seed=cfg.data.synthetic_seed,
                          text=cfg.data.synthetic_text)
            generation_s = round(time.time() - t0, 1)  # ~0 when the corpus was already there
        fmt, detected = corpus_format(cfg)
        summary = prepare_manifests(root, split_subsets(cfg, fmt), paths, cfg.data,
                                    min_samples=min_utterance_samples(cfg), fmt=fmt)
    except CorpusError as e:
        raise StageError(str(e)) from e
    if cfg.augment.enabled:
        summary["augment"] = augment_training_set(cfg, paths)
    elif paths.augmented_audio.exists():
        shutil.rmtree(paths.augmented_audio)
    if generation_s is not None:
        summary["synthetic_corpus_s"] = generation_s
    return {"format": fmt, "format_detected": detected, **summary}
