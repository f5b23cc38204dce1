"""Kaldi out and back in, on the smoke corpus through the command lines a user types.

The session's smoke run (``smoke_run``, shared with the other end-to-end tests) is exported with
``python -m asr_kd.align.kaldi_export``; a second run imports that directory with
``align.source=kaldi`` and builds its graph from the imported tree, model and lang; a third uses
the exported ``lang/`` as ``align.kaldi_lang_dir``. Labels, HCLG and GMM decoding must be the same.
"""

from __future__ import annotations

import gzip
import io
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import kaldiio
import numpy as np
import pytest

from asr_kd.paths import SPLITS, RunPaths

pytestmark = pytest.mark.slow

# The imported runs build no monophone graph (only the main HCLG is compared).
FAST = ["--set", "decode.gmm_monophone=false"]


@dataclass
class Runs:
    builtin: RunPaths
    kaldi_dir: Path
    imported: RunPaths  # our lang/, checked against the export's phones.txt
    imported_lang: RunPaths  # align.kaldi_lang_dir = the export's lang/


def recipe(corpus: Path, exp: Path, *args: str) -> None:
    res = subprocess.run([sys.executable, "-m", "asr_kd.recipes.librispeech", "--preset", "smoke", "--data-root",
                          str(corpus), "--exp-dir", str(exp), *FAST, *args], capture_output=True, text=True,
                         timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, smoke_corpus, smoke_run) -> Runs:
    root = tmp_path_factory.mktemp("kaldi-roundtrip")
    a, out, b, c = smoke_run, root / "kaldi_exp", root / "imported", root / "imported_lang"
    res = subprocess.run([sys.executable, "-m", "asr_kd.align.kaldi_export", "--exp-dir", str(a), str(out)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    for stage in ("prepare", "lang", "features"):  # the same corpus, lang and features: only align differs
        shutil.copytree(a / stage, b / stage)
    kaldi = ["--set", "align.source=kaldi", "--set", f"align.kaldi_ali_dir={out}"]
    recipe(smoke_corpus, b, *kaldi, "--stage", "align", "--stop-stage", "align")
    recipe(smoke_corpus, b, *kaldi, "--stage", "graph", "--stop-stage", "graph")
    shutil.copytree(b, c)
    kaldi += ["--set", f"align.kaldi_lang_dir={out / 'lang'}"]
    recipe(smoke_corpus, c, *kaldi, "--stage", "align", "--stop-stage", "align", "--force", "align")
    recipe(smoke_corpus, c, *kaldi, "--stage", "graph", "--stop-stage", "graph", "--force", "graph")
    return Runs(RunPaths(a), out, RunPaths(b), RunPaths(c))


def summary(paths: RunPaths, stage: str) -> dict:
    return json.loads(paths.marker(stage).read_text())["summary"]


def int_table(scp: Path) -> dict[str, list[int]]:
    from asr_kd.data.scp import load_scp

    return {u: np.asarray(v).tolist() for u, v in load_scp(scp).items()}


def test_the_export_is_a_kaldi_alignment_directory(runs):
    out = runs.kaldi_dir
    assert (out / "num_jobs").read_text() == "3\n"
    assert (out / "final.mdl").read_bytes().startswith(b"\0B<TransitionModel> <Topology> ")
    assert (out / "tree").read_bytes() == runs.builtin.tree.read_bytes()
    assert (out / "phones.txt").read_bytes() == (runs.builtin.lang / "phones.txt").read_bytes()
    for job, split in enumerate(SPLITS, 1):
        with gzip.open(out / f"ali.{job}.gz") as f:
            ali = {u: np.asarray(v).tolist() for u, v in kaldiio.load_ark(io.BytesIO(f.read()))}
        assert ali == int_table(runs.builtin.ali_scp(split)) and len(ali) > 0


def test_imported_labels_are_the_builtin_ones(runs):
    for run in (runs.imported, runs.imported_lang):
        align = summary(run, "align")
        assert align["source"] == "kaldi" and align["context"] == "triphone"
        assert align["model"]["binary"] and align["num_pdfs"] == summary(runs.builtin, "align")["num_pdfs"]
        for split in SPLITS:
            assert int_table(run.pdf_scp(split)) == int_table(runs.builtin.pdf_scp(split)), split
    assert summary(runs.imported, "align")["model"]["lang"]["dir"] == "lang"
    assert summary(runs.imported_lang, "align")["model"]["lang"]["dir"] == "align/lang"
    assert runs.imported.final_mdl.read_bytes() == (runs.kaldi_dir / "final.mdl").read_bytes()


def test_the_decoding_graph_is_the_same(runs):
    builtin, imported = summary(runs.builtin, "graph"), summary(runs.imported, "graph")
    assert imported["cached"] is False  # built in this run, from the imported tree, model and lang
    assert imported["HCLG"] == builtin["HCLG"] and imported["context_width"] == 3
    hclg = runs.builtin.graph / "HCLG.fst"
    assert (runs.imported.graph / "HCLG.fst").read_bytes() == hclg.read_bytes()
    assert (runs.imported_lang.graph / "HCLG.fst").read_bytes() == hclg.read_bytes()
    assert (runs.imported_lang.graph / "words.txt").read_bytes() == (runs.builtin.graph / "words.txt").read_bytes()


def test_the_imported_gmm_decodes_as_the_builtin_one(runs):
    """What the decode stage does for its GMM row: load align/ (here Kaldi's binary final.mdl), search graph/."""
    from asr_kd.align.feats import gmm_features, read_mfcc
    from asr_kd.align.model import load_model
    from asr_kd.data.manifest import read_manifest
    from asr_kd.decoding.search import SearchConfig, read_hclg_decoder

    utts = read_manifest(runs.builtin.manifest("dev"))[:3]
    raw, missing = read_mfcc(runs.builtin.mfcc_scp("dev"), [u.id for u in utts])
    assert not missing
    feats = gmm_features(raw, {u.id: u.speaker for u in utts})
    hyps = []
    for run in (runs.builtin, runs.imported):
        model = load_model(run.align)
        decoder = read_hclg_decoder(run.graph, model.trans_model, SearchConfig(8.0, 2000, 4.0))
        hyps.append([decoder.decode_gmm(u.id, model.am, feats[u.id], 0.1) for u in utts])
    assert [(h.words, h.ok) for h in hyps[0]] == [(h.words, h.ok) for h in hyps[1]]
    assert all(h.ok and h.words for h in hyps[1])
