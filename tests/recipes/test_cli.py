"""The recipe's command line: help, --list, --print-config, bad --set."""

import json
import subprocess
import sys

from asr_kd.paths import STAGE_NAMES
from asr_kd.recipes.librispeech import STAGES, main
from asr_kd.work import Nothing

DESIGN = ["prepare", "lang", "features", "align", "shards", "teachers", "ensemble", "distill", "graph", "decode",
          "conditions", "export", "report"]


def test_stage_order_matches_the_design():
    assert [s.name for s in STAGES] == list(STAGE_NAMES) == DESIGN  # paths.STAGE_NAMES orders the report's timing


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


def test_split_subsets_given_win_else_the_corpus_own(tmp_path):
    from asr_kd.config import load_config
    from asr_kd.stages.prepare import split_subsets
    from data_prep.synthetic import MARKER_NAME

    synthetic = tmp_path / "synth"
    synthetic.mkdir()
    (synthetic / MARKER_NAME).write_text("{}")
    assert split_subsets(load_config("smoke", {})) == {"train": ("train-synth",), "dev": ("dev-synth",),
                                                       "test": ("test-synth",)}
    marked = split_subsets(load_config("smoke", {"data.root": str(synthetic), "data.dev_subsets": "dev-other"}))
    assert marked == {"train": ("train-synth",), "dev": ("dev-other",), "test": ("test-synth",)}
    libri = split_subsets(load_config("tiny", {"data.root": str(tmp_path)}))
    assert libri == {"train": ("train-clean-100",), "dev": ("dev-clean",), "test": ("test-clean",)}
    paper = split_subsets(load_config("paper", {"data.root": str(tmp_path)}))
    assert paper["train"] == ("train-clean-100", "train-clean-360", "train-other-500")


def test_suggested_subset_fix_works_on_a_synthetic_corpus(smoke_corpus, tmp_path):
    """Issue 17: the fix the missing-subset error suggests (--set data.dev_subsets=...) must take
    effect also when --data-root is a synthetic corpus (recognised by its marker)."""
    root = tmp_path / "corpus"
    root.mkdir()
    for entry in smoke_corpus.iterdir():
        name = "dev-other" if entry.name == "dev-synth" else entry.name
        (root / name).symlink_to(entry)
    args = [sys.executable, "-m", "asr_kd.recipes.librispeech", "--preset", "smoke", "--data-root", str(root),
            "--exp-dir", str(tmp_path / "exp"), "--stop-stage", "prepare"]
    res = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert res.returncode == 1
    assert "dev-synth does not exist" in res.stderr and "dev-other" in res.stderr
    assert "--set data.train_subsets=" in res.stderr
    res = subprocess.run([*args, "--set", "data.dev_subsets=dev-other"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((tmp_path / "exp" / "prepare" / "DONE.json").read_text())["summary"]
    assert summary["splits"]["dev"]["subsets"] == ["dev-other"] and summary["splits"]["dev"]["utterances"] == 20


def test_any_failure_is_one_error_line_and_the_traceback_goes_to_the_log(tmp_path, capsys, monkeypatch):
    import asr_kd.recipes.librispeech as recipe
    from asr_kd.runner import Stage, StageError

    def boom(cfg, paths):
        raise KeyError("something unexpected")

    def missing(cfg, paths):
        raise StageError(f"{paths.manifest('train')} is missing; run the prepare stage first")

    for fn, kind in ((boom, "KeyError"), (missing, "manifest-train.jsonl is missing")):
        monkeypatch.setattr(recipe, "STAGES", [Stage("prepare", fn, work=Nothing.of, after=())])
        assert recipe.main(["--preset", "smoke", "--exp-dir", str(tmp_path)]) == 1
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and kind in lines[0], err
        assert "Traceback" not in err
    assert "Traceback" in (tmp_path / "recipe.log").read_text()
