"""The startup check: a broken native dependency stops the recipe with one line and the fix."""

import os
import subprocess
import sys
from pathlib import Path

from asr_kd.envcheck import REMEDY, check_environment, pinned_versions


def _broken_torchaudio(root: Path, version: str = "2.11.1") -> Path:
    """A torchaudio that installs but does not load, as 2.11.1 beside torch 2.11.0 did."""
    pkg = root / "torchaudio"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(
        "raise OSError('/venv/lib/torchaudio/lib/libtorchaudio.so: undefined symbol: "
        "torch_exception_get_what_without_backtrace')\n")
    info = root / f"torchaudio-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: torchaudio\nVersion: {version}\n")
    return root


def test_this_environment_passes():
    assert [p for p in check_environment() if p.fatal] == []


def test_the_project_pins_the_native_pair_exactly():
    pins = pinned_versions()
    assert pins["torch"] == pins["torchaudio"] == "2.11.0"
    for pkg in ("kaldi-hmm-gmm", "kaldifst", "kaldi-decoder", "kaldilm"):  # pinned, whether probed or not
        assert pkg in pins


def test_a_package_that_does_not_load_is_named_with_versions_and_remedy():
    def fails():
        raise OSError("libtorchaudio.so: undefined symbol: torch_exception_get_what_without_backtrace")

    problems = check_environment((("torch", lambda: None), ("torchaudio", fails)), pins={"torchaudio": "2.11.0"})
    assert len(problems) == 1 and problems[0].fatal
    line = problems[0].line()
    assert "\n" not in line
    assert line.startswith("error: torchaudio ")
    assert "undefined symbol" in line and "expected torchaudio==2.11.0" in line and REMEDY in line


def test_a_different_release_that_loads_is_a_warning():
    problems = check_environment((("torch", lambda: None),), pins={"torch": "0.0.1"})
    assert len(problems) == 1 and not problems[0].fatal
    assert problems[0].line().startswith("warning: torch ")


def test_recipe_exits_with_one_line_and_runs_no_stage(tmp_path):
    fake = _broken_torchaudio(tmp_path / "site")
    exp = tmp_path / "exp"
    env = {**os.environ, "PYTHONPATH": f"{fake}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    res = subprocess.run([sys.executable, "-m", "asr_kd.recipes.librispeech", "--preset", "smoke",
                          "--exp-dir", str(exp)], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, res.stderr
    assert "torchaudio 2.11.1 does not load" in errors[0]
    assert "undefined symbol" in errors[0] and "expected torchaudio==2.11.0" in errors[0]
    assert "requirements.lock" in errors[0]
    assert not (exp / "config.json").exists()
