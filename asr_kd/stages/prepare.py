"""The prepare stage: the corpus (LibriSpeech layout) -> ``prepare/manifest-<split>.jsonl``.

The corpus reader (:mod:`data_prep.librispeech`) takes plain arguments and returns the manifest;
this stage chooses the corpus (``--data-root``, or the synthetic corpus it generates once), the
subsets of each split and the shortest usable audio, writes the manifests, and turns the reader's
:class:`~data_prep.librispeech.CorpusError` into a :class:`~asr_kd.runner.StageError`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from asr_kd.config import DataConfig, RecipeConfig
from asr_kd.paths import SPLITS, RunPaths
from asr_kd.runner import StageError

DOC = "corpus -> manifests"
# model and features: the shortest usable audio (min_utterance_samples), deliberately not hashed
READS = ("data", "!model.left_context", "!model.right_context", "!features.frame_length_ms",
         "!features.frame_shift_ms")
AFTER = ()


def corpus_root(cfg: RecipeConfig) -> Path:
    """The corpus this run reads: --data-root, or the embedded synthetic corpus."""
    if cfg.data.root:
        return Path(cfg.data.root)
    d = cfg.data
    return Path(d.synthetic_dir) / f"synthetic-{d.synthetic_size}-seed{d.synthetic_seed}"


def split_subsets(cfg: RecipeConfig) -> dict[str, tuple[str, ...]]:
    """Subset directories per split: data.{train,dev,test}_subsets where given, else the corpus's
    own: the synthetic corpus's (also when it is passed as --data-root, recognised by its marker),
    or LibriSpeech's train-clean-100 / dev-clean / test-clean."""
    from data_prep.librispeech import DEFAULT_SUBSETS
    from data_prep.synthetic import MARKER_NAME, SUBSETS

    synthetic = not cfg.data.root or (Path(cfg.data.root) / MARKER_NAME).exists()
    own = {split: (SUBSETS[split],) for split in SPLITS} if synthetic else DEFAULT_SUBSETS
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
                      min_samples: int = 1) -> dict[str, Any]:
    """Read the corpus under ``root`` and write ``paths.manifest(split)`` for each split; the summary.
    Raises the reader's :class:`~data_prep.librispeech.CorpusError`."""
    from asr_kd.data.manifest import write_manifest
    from data_prep.librispeech import read_corpus

    corpus = read_corpus(root, subsets, sample_rate=data.sample_rate, extra_lexicon=data.extra_lexicon,
                         oov_policy=data.oov_policy, max_utts_per_split=data.max_utts_per_split,
                         lm_text=data.lm_text, min_samples=min_samples)
    for split, utts in corpus.splits.items():
        write_manifest(paths.manifest(split), utts)
    return corpus.summary


def run(cfg: RecipeConfig, paths: RunPaths) -> dict[str, Any]:
    """Manifests of train, dev and test; bad input (unusable audio included) named and counted."""
    from data_prep.librispeech import CorpusError
    from data_prep.synthetic import ensure_corpus

    root = corpus_root(cfg)
    try:
        if not cfg.data.root:
            ensure_corpus(root, size=cfg.data.synthetic_size, seed=cfg.data.synthetic_seed)
        return prepare_manifests(root, split_subsets(cfg), paths, cfg.data, min_samples=min_utterance_samples(cfg))
    except CorpusError as e:
        raise StageError(str(e)) from e
