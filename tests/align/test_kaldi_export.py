"""python -m asr_kd.align.kaldi_export: a run's align stage as a Kaldi experiment directory, and back."""

from __future__ import annotations

import gzip
import io
import subprocess
import sys

import kaldiio
import numpy as np
import pytest

from asr_kd.align.kaldi_export import export_kaldi, main
from asr_kd.stages._kaldi_import import import_kaldi_alignments
from asr_kd.align.model import init_monophone, load_model, save_model
from asr_kd.config import load_config
from asr_kd.data.lang import build_lexicon, write_lang
from asr_kd.data.scp import ark_scp_writer, load_scp
from asr_kd.paths import SPLITS, RunPaths
from asr_kd.errors import InputError

FRAMES = {"train": {"a": 12, "b": 9}, "dev": {"c": 7}, "test": {"d": 5, "e": 6}}


@pytest.fixture()
def run(tmp_path) -> RunPaths:
    """A run whose align stage is done: lang/, align/final.mdl (text) + tree, ali and pdf scp per split,
    and the fbank scp the import checks lengths against."""
    paths = RunPaths(tmp_path / "exp")
    lex = {"CAT": [("K", "AE", "T")], "DOG": [("D", "AO", "G")]}
    lexicon, _ = build_lexicon(lex, lex, position_dependent=False)
    lang = write_lang(paths.lang, lexicon, 0.5, False)
    (paths.lang / "DONE.json").write_text("{}\n")
    model = init_monophone(lang.topology(), np.zeros(39), np.ones(39))
    save_model(model, paths.final_mdl, paths.tree)
    rng = np.random.default_rng(0)
    tid2pdf = model.tid2pdf()
    for split, utts in FRAMES.items():
        ali = {u: rng.integers(1, len(tid2pdf), n).astype(np.int32) for u, n in utts.items()}
        with ark_scp_writer(paths.ali_scp(split)) as a, ark_scp_writer(paths.pdf_scp(split)) as p:
            for u in sorted(ali):
                a.write(u, ali[u])
                p.write(u, tid2pdf[ali[u]])
        with ark_scp_writer(paths.fbank_scp(split)) as f:
            for u, n in utts.items():
                f.write(u, np.zeros((n, 40), np.float32))
    return paths


def read_gz_ark(path) -> dict[str, list[int]]:
    with gzip.open(path, "rb") as f:
        return {u: np.asarray(v).tolist() for u, v in kaldiio.load_ark(io.BytesIO(f.read()))}


def scp_lists(path) -> dict[str, list[int]]:
    return {u: np.asarray(v).tolist() for u, v in load_scp(path).items()}


def test_export_writes_what_kaldi_reads(run, tmp_path):
    out = tmp_path / "kaldi"
    info = export_kaldi(run.root, out)
    assert (out / "num_jobs").read_text() == "3\n"
    for job, split in enumerate(SPLITS, 1):
        blob = gzip.open(out / f"ali.{job}.gz").read()
        first = sorted(FRAMES[split])[0]
        assert blob.startswith(first.encode() + b" \0B\x04")  # binary int32 vectors, Kaldi's Int32VectorWriter
        assert read_gz_ark(out / f"ali.{job}.gz") == scp_lists(run.ali_scp(split))
        assert info["jobs"][str(job)] == {"split": split, "utterances": len(FRAMES[split]),
                                          "frames": sum(FRAMES[split].values())}
    assert (out / "final.mdl").read_bytes().startswith(b"\0B<TransitionModel> ")
    np.testing.assert_array_equal(load_model(out).tid2pdf(), load_model(run.align).tid2pdf())
    assert (out / "tree").read_bytes() == run.tree.read_bytes()
    assert (out / "phones.txt").read_text() == (run.lang / "phones.txt").read_text()
    for name in ("words.txt", "L.fst", "L_disambig.fst", "topo", "phones/disambig.int", "phones/silence.csl"):
        assert (out / "lang" / name).read_bytes() == (run.lang / name).read_bytes(), name
    assert not (out / "lang" / "DONE.json").exists() and not (out / "mono").exists()


def test_export_is_byte_for_byte_repeatable_and_refuses_a_foreign_directory(run, tmp_path):
    out = tmp_path / "kaldi"
    export_kaldi(run.root, out)
    first = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    (out / "ali.4.gz").write_bytes(b"stale")  # left by an export with more jobs
    export_kaldi(run.root, out)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == first
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine\n")
    with pytest.raises(InputError, match="not empty"):
        export_kaldi(run.root, busy)


def test_export_then_import_gives_the_same_labels_model_and_lang(run, tmp_path):
    out = tmp_path / "kaldi"
    export_kaldi(run.root, out)
    back = RunPaths(tmp_path / "back")
    for split in SPLITS:  # the second run has the same features and lang, and no align stage yet
        back.fbank_scp(split).parent.mkdir(parents=True)
        for suffix in (".scp", ".ark"):
            src = run.fbank_scp(split).with_suffix(suffix)
            (back.fbank_scp(split).with_suffix(suffix)).write_bytes(src.read_bytes())
    back.lang.mkdir(parents=True)
    for f in run.lang.rglob("*"):
        if f.is_file():
            (back.lang / f.relative_to(run.lang)).parent.mkdir(parents=True, exist_ok=True)
            (back.lang / f.relative_to(run.lang)).write_bytes(f.read_bytes())
    cfg = load_config("smoke", {"align.source": "kaldi", "align.kaldi_ali_dir": str(out)})
    summary = import_kaldi_alignments(cfg, back)
    assert summary["success_rate"] == 1.0 and summary["model"]["binary"]
    assert summary["model"]["lang"]["dir"] == "lang"  # ours, its phones.txt equal to the exported one
    for split in SPLITS:
        assert scp_lists(back.pdf_scp(split)) == scp_lists(run.pdf_scp(split))
        assert scp_lists(back.ali_scp(split)) == scp_lists(run.ali_scp(split))
    assert back.final_mdl.read_bytes() == (out / "final.mdl").read_bytes()


def test_command_line(run, tmp_path):
    out = tmp_path / "kaldi"
    res = subprocess.run([sys.executable, "-m", "asr_kd.align.kaldi_export", "--exp-dir", str(run.root), str(out)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "ali.1.gz  train: 2 utterances, 21 frames" in res.stdout
    run.ali_scp("dev").unlink()
    assert main(["--exp-dir", str(run.root), str(out)]) == 1
