"""Issue 31 (3): a test word neither the LM text nor the training transcripts hold is not in the
decoding graph, and the graph stage (and the report from it) counts it as OOV.

A small run directory: manifests and the prepare marker written by hand, then the real lang stage,
a flat monophone GMM on its topology, and the real graph stage (LM, G, HCLG), then the report's
``lm`` section."""

from __future__ import annotations

import json
import math

import kaldifst
import numpy as np
import pytest

from asr_kd.align.model import init_monophone, save_model
from asr_kd.config import load_config
from asr_kd.data.lang import load_lang
from asr_kd.decoding.graph import read_word_symbols
from asr_kd.stages import _collect as collect
from asr_kd.decoding.report.render import lm_table
from asr_kd.decoding.report.rows import LmSection
from asr_kd.fileio import write_json
from asr_kd.paths import GraphDir, RunPaths
from asr_kd.runner import marker_summary
from asr_kd.stages import graph as graph_stage
from asr_kd.stages import lang as lang_stage

TRAIN = ["THE DOG RAN HOME", "A CAT SAT ON THE MAT", "THE CAT RAN"]
LM_TEXT = ["THE DOG SAT ON A MAT", "A DOG RAN HOME", "THE CAT SAT", "THE HORSE RAN HOME"]
DEV = ["THE HORSE SAT", "A DOG SAT ON THE MAT"]  # every word in the LM text or in train
TEST = ["THE ZEBRA RAN HOME", "A CAT SAT", "THE ZEBRA SAT"]  # ZEBRA: neither in the LM text nor in train


def _manifest(path, texts):
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"id": f"{path.stem}-{i}", "speaker": "s", "chapter": "c", "audio": "x.flac", "text": t,
             "num_samples": 16000, "sample_rate": 16000} for i, t in enumerate(texts)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _olabels(fst: kaldifst.StdVectorFst) -> set[int]:
    return {a.olabel for s in kaldifst.StateIterator(fst) for a in kaldifst.ArcIterator(fst, s)}


@pytest.mark.slow
def test_a_test_word_outside_the_lm_and_train_is_an_oov_not_in_the_graph(tmp_path):
    paths = RunPaths(tmp_path / "exp")
    for split, texts in (("train", TRAIN), ("dev", DEV), ("test", TEST)):
        _manifest(paths.manifest(split), texts)
    lm_text = tmp_path / "lm-text.txt"
    lm_text.write_text("\n".join(LM_TEXT) + "\n")
    write_json(paths.marker("prepare"), {"summary": {"lm_text": str(lm_text)}})
    cfg = load_config("smoke", {"data.oov_policy": "error"})  # every word here is in CMUdict

    lang_summary = lang_stage.run(cfg, paths)
    lang = load_lang(paths.lang)
    assert "ZEBRA" in lang.words  # in the lexicon, for the aligner (the test split's frame labels)...
    assert lang_summary["aligner_only_words"] == 1 and lang_summary["vocabulary"]["size"] == 10
    paths.align.mkdir(parents=True, exist_ok=True)
    save_model(init_monophone(lang.topology(), np.zeros(13), np.ones(13)), paths.final_mdl, paths.tree)

    summary = graph_stage.run(cfg, paths)
    write_json(paths.marker("graph"), {"wall_time_s": 1.0, "summary": summary})
    g = GraphDir(paths.graph)
    zebra = lang.words["ZEBRA"]
    graph_words = set(read_word_symbols(g.words).values())
    assert "ZEBRA" not in graph_words  # ...but not in the decoding graph: words.txt, G, HCLG
    assert {"THE", "HORSE", "DOG", "MAT"} <= graph_words  # LM-text-only and training words are
    assert read_word_symbols(g.words)[lang.words["HORSE"]] == "HORSE"  # ids as in lang/words.txt
    assert zebra not in _olabels(kaldifst.StdVectorFst.read(str(g.g_fst)))
    hclg_words = _olabels(kaldifst.StdVectorFst.read(str(g.hclg)))
    assert zebra not in hclg_words and lang.words["HORSE"] in hclg_words
    assert "ZEBRA" not in paths.lm_arpa.read_text()
    assert "ZEBRA" not in paths.lm_train_text.read_text()  # the LM's text: LM text + train only

    assert str(paths.root) not in json.dumps(summary)  # a run directory can be moved (issue 17)
    splits = marker_summary(paths, "graph")["lm"]["splits"]
    assert splits["test"]["tokens"] == 10 and splits["test"]["oov_tokens"] == 2
    assert splits["test"]["oov_rate"] == pytest.approx(2 / 10)
    assert splits["test"]["oov_words"] == [["ZEBRA", 2]]
    assert splits["dev"]["oov_tokens"] == 0 and splits["dev"]["oov_rate"] == 0.0
    for split in ("dev", "test"):
        assert 1.0 < splits[split]["perplexity"] < 10 + 2 and math.isfinite(splits[split]["perplexity"])

    lm = collect.lm_section(paths).to_json()
    assert lm["oov_rate"] == {"dev": 0.0, "test": pytest.approx(2 / 10)}
    assert lm["oov_tokens"] == {"dev": 0, "test": 2} and lm["vocabulary_size"] == 10
    assert lm["perplexity"]["test"] == splits["test"]["perplexity"]
    assert "| test | 10 | 2 | 20.00% |" in "\n".join(lm_table(LmSection.from_json(lm)))


@pytest.mark.slow
def test_a_user_arpa_keeps_its_words_and_gains_the_training_words(tmp_path):
    import gzip

    from asr_kd.decoding import lm

    paths = RunPaths(tmp_path / "exp")
    for split, texts in (("train", TRAIN), ("dev", DEV), ("test", TEST)):
        _manifest(paths.manifest(split), texts)
    text = tmp_path / "arpa-text.txt"
    text.write_text("THE GIRAFFE SAT\nA DOG RAN HOME\nTHE HORSE SAT\n")  # no CAT, ON, MAT (train words)
    plain = tmp_path / "user.arpa"
    lm.build_arpa(text, plain, order=2)  # with <unk>, as LibriSpeech's
    arpa = tmp_path / "user.arpa.gz"
    with gzip.open(arpa, "wt") as f:
        f.write(plain.read_text())
    write_json(paths.marker("prepare"), {"summary": {"lm_text": ""}})
    cfg = load_config("smoke", {"data.oov_policy": "error", "decode.arpa": str(arpa)})

    lang_stage.run(cfg, paths)
    lang = load_lang(paths.lang)
    assert "GIRAFFE" in lang.words  # an ARPA word no transcript has: pronounced, decodable
    paths.align.mkdir(parents=True, exist_ok=True)
    save_model(init_monophone(lang.topology(), np.zeros(13), np.ones(13)), paths.final_mdl, paths.tree)
    summary = graph_stage.run(cfg, paths)
    assert summary["lm"]["added_unigrams"] == 3  # CAT, MAT, ON: training words the ARPA lacked
    assert summary["lm"]["order"] == 2
    graph_words = set(read_word_symbols(GraphDir(paths.graph).words).values())
    assert {"GIRAFFE", "CAT", "MAT", "ON", "HORSE"} <= graph_words and "ZEBRA" not in graph_words
    hclg_words = _olabels(kaldifst.StdVectorFst.read(str(GraphDir(paths.graph).hclg)))
    assert {lang.words[w] for w in ("GIRAFFE", "CAT", "MAT")} <= hclg_words
    assert summary["lm"]["splits"]["test"]["oov_tokens"] == 2
