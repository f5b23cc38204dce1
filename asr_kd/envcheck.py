"""Startup check of the native dependencies: fail fast, in one line, with the command that fixes it.

The recipe's compiled dependencies break in ways pip does not see: a torchaudio build made for
another torch release installs fine and then dies on import with ``undefined symbol: ...``
(torchaudio 2.11.1 beside torch 2.11.0 did exactly that). ``check_environment()`` imports each of
them once, before any stage runs, and compares the installed versions with the exact pins the
project was installed with (``asr-kd``'s own requirements, i.e. ``pyproject.toml``).

    problems = check_environment()      # [] when everything loads
    for p in problems: print(p.line())  # "error: torchaudio 2.11.1 does not load (...); expected ..."
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata

# The lock file holds every package at its tested version; this is how to go back to it.
REMEDY = "pip install -r requirements.lock && pip install --no-deps -e .   (or: make venv)"


def _fbank() -> None:
    """torchaudio's Kaldi fbank on a short signal: loads libtorchaudio and runs the kernel."""
    import torch
    import torchaudio.compliance.kaldi as ta_kaldi

    ta_kaldi.fbank(torch.zeros(1, 800), num_mel_bins=40, sample_frequency=16000.0, dither=0.0)


def _import(module: str) -> Callable[[], None]:
    return lambda: importlib.import_module(module) and None


# (distribution name, how to prove it loads); the order is the import order (torch first).
NATIVE_CHECKS: tuple[tuple[str, Callable[[], None]], ...] = (
    ("torch", _import("torch")),
    ("torchaudio", _fbank),
    ("kaldi-hmm-gmm", _import("kaldi_hmm_gmm")),
    ("kaldifst", _import("kaldifst")),
    ("kaldilm", _import("kaldilm")),
)
# kaldi-decoder is pinned but not imported by the recipe (decoding goes through kaldi-hmm-gmm), and
# loading its extension after kaldi-hmm-gmm in a busy process was seen to deadlock in dlopen: it
# is not probed here.


@dataclass(frozen=True)
class Problem:
    package: str
    installed: str | None  # None: not installed
    expected: str | None  # the exact pin ("2.11.0"), None if the project does not pin it
    reason: str
    fatal: bool = True  # False: it loads, but is not the release the project was tested with

    def line(self) -> str:
        have = f"{self.package} {self.installed}" if self.installed else f"{self.package} (not installed)"
        want = f"; expected {self.package}=={self.expected}" if self.expected else ""
        return f"{'error' if self.fatal else 'warning'}: {have} {self.reason}{want}; fix: {REMEDY}"


def pinned_versions(dist: str = "asr-kd") -> dict[str, str]:
    """The exact ``name==version`` pins among ``dist``'s requirements (names lower-cased)."""
    try:
        reqs = metadata.requires(dist) or []
    except metadata.PackageNotFoundError:
        return {}
    pins = {}
    for req in reqs:
        spec = req.split(";")[0].strip()  # drop environment markers (extras are markers too)
        if ";" in req and "extra ==" in req:
            continue
        if "==" in spec and "*" not in spec:
            name, version = spec.split("==", 1)
            pins[name.strip().lower()] = version.strip()
    return pins


def _installed(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def check_environment(checks: tuple[tuple[str, Callable[[], None]], ...] = NATIVE_CHECKS,
                      pins: dict[str, str] | None = None) -> list[Problem]:
    """Every native dependency that is missing, does not load, or differs from its exact pin."""
    pins = pinned_versions() if pins is None else pins
    problems = []
    for package, load in checks:
        installed, expected = _installed(package), pins.get(package)
        try:
            load()
        except Exception as e:  # noqa: BLE001 - any failure to load is the message
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            problems.append(Problem(package, installed, expected, f"does not load ({type(e).__name__}: {first})"))
            continue
        if expected and installed and installed.split("+")[0] != expected:
            problems.append(Problem(package, installed, expected, "is not the tested release", fatal=False))
    return problems
