"""The recipe's command line: help, --list, --print-config, bad --set."""

import json
import subprocess
import sys

from asr_kd.recipes.librispeech import STAGES, main

STAGE_NAMES = ["prepare", "lang", "features", "align", "shards", "teachers", "ensemble", "distill",
               "graph", "decode", "report"]


def test_stage_order_matches_the_design():
    assert [s.name for s in STAGES] == STAGE_NAMES


def test_help_explains_every_flag():
    out = subprocess.run([sys.executable, "-m", "asr_kd.recipes.librispeech", "--help"],
                         capture_output=True, text=True, check=True).stdout
    for flag in ("--data-root", "--preset", "--exp-dir", "--stage", "--stop-stage", "--set", "--list",
                 "--show", "--force"):
        assert flag in out


def test_list_shows_every_stage(tmp_path, capsys):
    assert main(["--preset", "smoke", "--exp-dir", str(tmp_path), "--list"]) == 0
    out = capsys.readouterr().out
    for name in STAGE_NAMES:
        assert name in out
    assert "pending" in out


def test_unknown_override_is_an_error_naming_the_key(tmp_path, capsys):
    assert main(["--preset", "smoke", "--exp-dir", str(tmp_path), "--set", "train.nope=1"]) == 2
    assert "train.nope" in capsys.readouterr().err


def test_print_config(tmp_path, capsys):
    assert main(["--preset", "smoke", "--exp-dir", str(tmp_path), "--set", "train.lr=0.25",
                 "--print-config"]) == 0
    tree = json.loads(capsys.readouterr().out)
    assert tree["train"]["lr"] == 0.25 and tree["preset"] == "smoke"


def test_show_before_run_is_an_error(tmp_path, capsys):
    assert main(["--preset", "smoke", "--exp-dir", str(tmp_path), "--show", "prepare"]) == 1
    assert "has not run" in capsys.readouterr().err
