"""Which reader reads a corpus: the layout named (``librispeech``, ``kaldi``, ``lhotse``) or detected.

Detection (``data.format=auto``) looks at what the corpus root holds, in this order:

1. ``kaldi`` when the root, or a directory directly in it, holds a ``wav.scp`` (Kaldi's ``data/``);
2. ``lhotse`` when the root holds lhotse manifests, files named
   ``[<prefix>_]recordings_<part>.jsonl[.gz]``, ``..supervisions_..`` or ``..cuts_..``;
3. ``librispeech`` otherwise (subset directories of ``<speaker>/<chapter>/`` audio).

Every reader returns the same :class:`~data_prep.librispeech.Corpus`: the utterances of each split
and the account of what was skipped, by the same rules. The Kaldi and lhotse readers write audio
that cannot be read in place under ``audio_dir`` (:mod:`data_prep.audio`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from data_prep.librispeech import DEFAULT_SUBSETS, Corpus, CorpusError

log = logging.getLogger(__name__)

FORMATS = ("librispeech", "kaldi", "lhotse")
SIMPLE_SPLITS = {"train": ("train",), "dev": ("dev",), "test": ("test",)}  # Kaldi and lhotse defaults


def detect_format(root: Path) -> str:
    """``kaldi``, ``lhotse`` or ``librispeech``, by the rule in the module docstring."""
    from data_prep.lhotse_corpus import is_lhotse_root

    root = Path(root)
    if not root.is_dir():
        return "librispeech"  # the LibriSpeech reader names the missing root
    if (root / "wav.scp").is_file() or any((d / "wav.scp").is_file() for d in root.iterdir() if d.is_dir()):
        return "kaldi"
    if is_lhotse_root(root):
        return "lhotse"
    return "librispeech"


def default_splits(fmt: str, root: Path | None) -> dict[str, tuple[str, ...]]:
    """The corpus's own split -> subsets: the synthetic corpus's (recognised by its marker, or when
    there is no root), LibriSpeech's, or ``train``/``dev``/``test`` for Kaldi data dirs and lhotse parts."""
    from data_prep.synthetic import MARKER_NAME, SUBSETS

    if fmt in ("kaldi", "lhotse"):
        return dict(SIMPLE_SPLITS)
    if root is None or (Path(root) / MARKER_NAME).exists():
        return {split: (subset,) for split, subset in SUBSETS.items()}
    return dict(DEFAULT_SUBSETS)


def read_formatted_corpus(fmt: str, root: Path, split_subsets: dict[str, tuple[str, ...]], audio_dir: Path,
                          **kw: Any) -> Corpus:
    """Read ``root`` in format ``fmt`` (one of :data:`FORMATS`); ``kw`` are the readers' shared
    options (sample_rate, extra_lexicon, oov_policy, max_utts_per_split, lm_text, min_samples).
    The summary says which format was read."""
    log.info("reading %s as %s: %s", root, fmt, ", ".join(f"{s}={'+'.join(v)}" for s, v in split_subsets.items()))
    if fmt == "librispeech":
        from data_prep.librispeech import read_corpus

        corpus = read_corpus(root, split_subsets, **kw)
    elif fmt == "kaldi":
        from data_prep.kaldi import read_kaldi_corpus

        corpus = read_kaldi_corpus(root, split_subsets, audio_dir, **kw)
    elif fmt == "lhotse":
        from data_prep.lhotse_corpus import read_lhotse_corpus

        corpus = read_lhotse_corpus(root, split_subsets, audio_dir, **kw)
    else:
        raise CorpusError(f"unknown corpus format {fmt!r}; one of {', '.join(FORMATS)}")
    corpus.summary = {"format": fmt, **corpus.summary}
    return corpus
