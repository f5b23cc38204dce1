"""WER: our counts equal jiwer's on known strings; the scoring files are readable and complete."""

from __future__ import annotations

import jiwer
import pytest

from asr_kd.decoding import scoring

REFS = {"u1": "THE CAT SAT ON THE MAT".split(), "u2": "A DOG RAN".split(), "u3": "HELLO".split()}
HYPS = {"u1": "THE CAT SAT IN THE MAT TODAY".split(), "u2": "A RAN".split(), "u3": "HELLO".split()}


def test_corpus_wer_equals_jiwer() -> None:
    stats, _ = scoring.score(REFS, HYPS)
    utts = sorted(REFS)
    ref = [" ".join(REFS[u]) for u in utts]
    hyp = [" ".join(HYPS[u]) for u in utts]
    out = jiwer.process_words(ref, hyp)
    assert (stats.substitutions, stats.deletions, stats.insertions) == (out.substitutions, out.deletions,
                                                                         out.insertions)
    assert (stats.substitutions, stats.deletions, stats.insertions) == (1, 1, 1)
    assert stats.wer == pytest.approx(jiwer.wer(ref, hyp))
    assert stats.wer == pytest.approx(3 / 10)
    assert stats.sentence_errors == 2


def test_missing_and_empty_hypotheses_are_deletions_and_empty_refs_insertions() -> None:
    stats, _ = scoring.score({"a": ["X", "Y"]}, {})
    assert (stats.deletions, stats.wer) == (2, 1.0)
    stats, aligned = scoring.score({"a": []}, {"a": ["Z"]})
    assert stats.insertions == 1 and aligned[0].ops == [("I", "***", "Z")]


def test_scoring_files(tmp_path) -> None:
    stats = scoring.write_scoring(tmp_path, REFS, HYPS, title="test")
    wer = (tmp_path / "wer").read_text()
    assert "%WER 30.00 [ 3 / 10, 1 ins, 1 del, 1 sub ]" in wer
    per_utt = (tmp_path / "per_utt").read_text().splitlines()
    assert per_utt[0].split() == ["u1", "ref", "THE", "CAT", "SAT", "ON", "THE", "MAT", "***"]
    assert per_utt[1].split() == ["u1", "hyp", "THE", "CAT", "SAT", "IN", "THE", "MAT", "TODAY"]
    assert per_utt[2].split() == ["u1", "op", "C", "C", "C", "S", "C", "C", "I"]
    assert "u2 #csid 2 0 0 1" in per_utt
    assert (tmp_path / "hyp.txt").read_text().splitlines()[1] == "u2 A RAN"
    import json

    assert json.loads((tmp_path / "wer.json").read_text())["wer"] == pytest.approx(stats.wer)
