"""The SLURM scripts: valid bash, and every command and --set key they use exists."""

import re
import subprocess
from pathlib import Path

import pytest

from asr_kd.config import load_config, parse_set_args

SLURM = Path(__file__).resolve().parents[2] / "recipes" / "librispeech" / "slurm"
SCRIPTS = sorted(SLURM.glob("*.sbatch")) + [SLURM / "submit_all.sh", SLURM / "common.sh"]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_is_valid_bash(script):
    res = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_scripts_run_the_recipe_module_the_tests_run():
    common = (SLURM / "common.sh").read_text()
    assert "python -m asr_kd.recipes.librispeech" in common
    for script in SLURM.glob("*.sbatch"):
        assert '"${RECIPE[@]}"' in script.read_text(), script.name


@pytest.mark.parametrize("script", sorted(SLURM.glob("*.sbatch")), ids=lambda p: p.name)
def test_every_set_key_exists_in_the_config(script):
    keys = re.findall(r"--set ([a-z_]+\.[a-z_]+)=", script.read_text())
    assert keys or script.name == "data.sbatch" or "--stage" in script.read_text()
    # values are shell expansions; a placeholder of the right type checks the key and its type
    placeholders = {k: "1" for k in keys}
    placeholders.update({k: "ddp" for k in keys if k.endswith("strategy")})
    load_config("paper", parse_set_args([f"{k}={v}" for k, v in placeholders.items()]))
