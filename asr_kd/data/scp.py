"""Kaldi ark/scp tables inside a run directory: written atomically, readable wherever the run directory is.

An scp line names its ark relative to the scp's own directory, e.g. in
``features/train/fbank.scp``::

    103-1240-0000 fbank.ark:14

so a run directory can be moved or copied. :func:`load_scp` resolves such names against the
scp's directory when it reads them; absolute names (as runs made before this rule wrote them,
or a Kaldi pipe) are read as they are. Kaldi's own tools read these tables from the scp's
directory: ``cd exp/features/train && copy-feats scp:fbank.scp ark,t:- | head``.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import BinaryIO, TextIO

import kaldiio
import numpy as np

from asr_kd.fileio import atomic_path


class ArkScpWriter:
    """Appends matrices to an open ark file and its scp; the scp names the *final* ark, relative
    to the scp's directory (``103-1240-0000 fbank.ark:14``).

    The files are written under temp names (see :func:`ark_scp_writer`) and renamed when complete.
    """

    def __init__(self, ark: BinaryIO, scp: TextIO, final_ark: Path, scp_dir: Path) -> None:
        self.ark = ark
        self.scp = scp
        self.ark_name = os.path.relpath(Path(final_ark).resolve(), Path(scp_dir).resolve())

    def write(self, key: str, array: np.ndarray) -> None:
        if not key or any(c.isspace() for c in key):
            raise ValueError(f"utterance id {key!r} is not a valid Kaldi key (empty or has whitespace)")
        offset = self.ark.tell() + len(key.encode()) + 1  # the scp offset points past "key "
        kaldiio.save_ark(self.ark, {key: array})
        self.scp.write(f"{key} {self.ark_name}:{offset}\n")

    def append_table(self, scp_path: Path) -> None:
        """Append a whole table :func:`ark_scp_writer` wrote (one ark, named relative to its scp):
        its ark's bytes are copied as they are, its scp lines re-pointed into this ark."""
        scp_path = Path(scp_path)
        ark_path = scp_path.with_suffix(".ark")
        base = self.ark.tell()
        with open(ark_path, "rb") as src:
            shutil.copyfileobj(src, self.ark, 1 << 20)
        with open(scp_path) as f:
            for line in f:
                key, _, where = line.rstrip("\n").partition(" ")
                name, _, offset = where.rpartition(":")
                if name != ark_path.name or not offset.isdigit():
                    raise ValueError(f"{scp_path}: {line.strip()!r} does not point into {ark_path.name}; "
                                     "only a table written by ark_scp_writer can be appended")
                self.scp.write(f"{key} {self.ark_name}:{base + int(offset)}\n")


@contextlib.contextmanager
def ark_scp_writer(scp_path: Path) -> Iterator[ArkScpWriter]:
    """Write ``<name>.ark`` + ``<name>.scp`` atomically: on success the ark is renamed, then the scp."""
    scp_path = Path(scp_path)
    ark_path = scp_path.with_suffix(".ark")
    with atomic_path(scp_path) as scp_tmp, atomic_path(ark_path) as ark_tmp:  # inner (ark) renamed first
        with open(ark_tmp, "wb") as ark, open(scp_tmp, "w") as scp:
            yield ArkScpWriter(ark, scp, ark_path, scp_path.parent)
            for f in (ark, scp):
                f.flush()
                os.fsync(f.fileno())


def _resolved(line: str, base: str) -> str:
    key, sep, name = line.rstrip("\n").partition(" ")
    name = name.strip()
    if sep and name and not os.path.isabs(name) and not name.startswith("|") and not name.endswith("|"):
        name = os.path.join(base, name)
    return f"{key}{sep}{name}\n"


def load_scp(scp_path: str | os.PathLike) -> Mapping[str, np.ndarray]:
    """utt -> matrix, read lazily (kaldiio) from an scp whose ark names are relative to it."""
    base = os.path.dirname(os.path.abspath(scp_path))
    with open(scp_path) as f:
        text = "".join(_resolved(line, base) for line in f if line.strip())
    return kaldiio.load_scp(io.StringIO(text))
