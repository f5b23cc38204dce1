"""data.extra_test_subsets (LibriSpeech's test-other beside test-clean): read by the conditions
stage from the run's corpus, their OOV rate and perplexity against the run's decoding LM, and the
report's lm section and test-conditions table with them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asr_kd.config import load_config
from asr_kd.data.manifest import read_manifest
from asr_kd.decoding import lm
from asr_kd.stages import _collect as collect
from asr_kd.decoding.report.render import lm_table
from asr_kd.fileio import write_json, write_text
from asr_kd.paths import GraphDir, RunPaths
from asr_kd.stages import conditions


def _subset(root: Path, subset: str, texts: list[str]) -> None:
    chapter = root / subset / "7" / "70"
    chapter.mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = []
    for i, text in enumerate(texts):
        sf.write(chapter / f"7-70-{i:04d}.flac", (0.1 * rng.standard_normal(16000)).astype(np.float32), 16000)
        lines.append(f"7-70-{i:04d} {text}")
    write_text(chapter / "7-70.trans.txt", "\n".join(lines) + "\n")


@pytest.fixture()
def run(tmp_path):
    root = tmp_path / "LibriSpeech"
    _subset(root, "test-other", ["THE CAT SAT", "A ZEBRA SAT ON THE MAT"])
    cfg = load_config("smoke", {"data.root": str(root), "data.extra_test_subsets": "test-other"})
    paths = RunPaths(tmp_path / "exp")
    g = GraphDir(paths.graph)
    write_text(g.words, "".join(f"{w} {i}\n" for i, w in enumerate(
        ["<eps>", "A", "CAT", "MAT", "ON", "SAT", "THE", "#0", "<s>", "</s>"])))
    text = tmp_path / "lm.txt"
    text.write_text("THE CAT SAT ON A MAT\nA CAT SAT\n")
    lm.build_arpa(text, paths.lm_arpa, order=2, vocab={"A", "CAT", "MAT", "ON", "SAT", "THE"})
    return cfg, paths


def test_extra_test_subsets_are_read_from_the_corpus(run):
    cfg, paths = run
    manifests = conditions.extra_test_manifests(cfg, paths)
    assert list(manifests) == ["test-other"]
    utts = read_manifest(manifests["test-other"])
    assert [u.text for u in utts] == ["THE CAT SAT", "A ZEBRA SAT ON THE MAT"]  # ZEBRA's utterance kept
    stats = conditions.lm_on(paths, manifests["test-other"])
    assert (stats["tokens"], stats["oov_tokens"], stats["oov_words"]) == (9, 1, [["ZEBRA", 1]])
    assert stats["perplexity"] > 1.0

    bad = load_config("smoke", {"data.root": cfg.data.root, "data.extra_test_subsets": "test-others"})
    with pytest.raises(Exception, match="test-others"):
        conditions.extra_test_manifests(bad, paths)


def test_report_shows_the_extra_test_set_beside_test(run):
    cfg, paths = run
    manifests = conditions.extra_test_manifests(cfg, paths)
    split = {"tokens": 40, "oov_tokens": 2, "oov_rate": 0.05, "perplexity": 60.0}
    write_json(paths.marker("graph"), {"summary": {"lm": {"source": "s", "order": 2,
                                                          "vocabulary": {"in_graph": 6}, "splits": {"test": split}}}})
    row = {"wer": 0.2, "wer_ci": [0.1, 0.3], "frame_acc": 0.5}
    write_json(paths.marker("conditions"), {"summary": {"conditions": {"test-other": {
        "utterances": 2, "best_student": "distilled_T1", "mean_teacher": row, "ensemble": row, "student": row,
        "ensemble_wer_gain": 0.0, "gain_kept": None, "lm": conditions.lm_on(paths, manifests["test-other"])}}}})
    section = collect.lm_section(paths)
    assert section.oov_rate == {"test": 0.05, "test-other": pytest.approx(1 / 9)}
    assert set(section.perplexity) == {"test", "test-other"}
    md = "\n".join(lm_table(section))
    assert "| test | 40 | 2 | 5.00% | 60.0 |" in md and "| test-other | 9 | 1 | 11.11% |" in md
