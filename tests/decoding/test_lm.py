"""Kneser-Ney LM: normalisation of every context, ARPA round trip, kaldilm compatibility."""

from __future__ import annotations

import itertools

import pytest

from asr_kd.decoding import lm

TEXT = [
    "THE CAT SAT ON THE MAT",
    "THE DOG SAT ON THE LOG",
    "A CAT RAN",
    "A DOG RAN TO THE CAT",
    "THE CAT SAT",
    "THE CAT SAT ON A MAT",
]


@pytest.fixture()
def model() -> lm.NgramModel:
    return lm.estimate_kneser_ney([s.split() for s in TEXT], order=3, vocab={"BIRD"})


def _targets(model: lm.NgramModel) -> list[str]:
    return [w for w in model.vocab if w != lm.BOS]


def test_every_context_sums_to_one(model: lm.NgramModel) -> None:
    scorer = lm.ArpaModel(model)
    contexts: list[tuple[str, ...]] = [()]
    for k in (1, 2):
        contexts += [g for g in model.orders[k - 1] if g[-1] != lm.EOS]
    contexts.append(("NEVER", "SEEN"))  # unseen history: pure back-off
    for h in contexts:
        total = sum(10 ** scorer.log10_prob(h, w) for w in _targets(model))
        assert total == pytest.approx(1.0, abs=1e-4), h


def test_kneser_ney_counts_and_discounts() -> None:
    raw = lm.raw_counts([["A", "B"], ["C", "B"], ["A", "B"]], order=2)
    adj = lm.adjusted_counts(raw)
    assert raw[1][("A", "B")] == 2
    assert adj[1][("A", "B")] == 2  # top order keeps raw counts
    assert adj[0][("B",)] == 2  # two distinct left neighbours: A and C
    assert adj[0][("A",)] == 1  # only <s> precedes A
    d1, d2, d3 = lm.modified_discounts([1, 1, 1, 2, 2, 3, 4])
    y = 3 / (3 + 2 * 2)
    assert d1 == pytest.approx(1 - 2 * y * 2 / 3)
    assert d2 == pytest.approx(2 - 3 * y * 1 / 2)
    assert d3 == pytest.approx(3 - 4 * y * 1 / 1)


def test_seen_trigram_beats_backoff(model: lm.NgramModel) -> None:
    scorer = lm.ArpaModel(model)
    assert scorer.log10_prob(["THE", "CAT"], "SAT") > scorer.log10_prob(["THE", "CAT"], "LOG")
    assert scorer.log10_prob([], "BIRD") > -10  # vocabulary-only word keeps some mass


def test_arpa_round_trip_and_perplexity(tmp_path, model: lm.NgramModel) -> None:
    path = tmp_path / "lm.arpa"
    lm.write_arpa(model, path)
    back = lm.read_arpa(path)
    assert back.counts() == model.counts()
    for k in range(3):
        for g, (p, b) in model.orders[k].items():
            assert back.orders[k][g][0] == pytest.approx(p, abs=1e-5)
            assert back.orders[k][g][1] == pytest.approx(b, abs=1e-5)
    sents = [s.split() for s in TEXT]
    ppl = lm.perplexity(back, sents)
    assert 1.0 < ppl < len(_targets(model))
    uniform = lm.estimate_kneser_ney([["X"]], order=3, vocab=set(itertools.chain(*sents)))
    assert lm.perplexity(uniform, sents) > ppl


def test_build_arpa_skips_oov_lines_and_parses_with_kaldilm(tmp_path) -> None:
    text = tmp_path / "text.txt"
    text.write_text("\n".join(TEXT + ["THE ZEBRA SAT"]) + "\n")
    vocab = set(" ".join(TEXT).split())
    summary = lm.build_arpa(text, tmp_path / "lm.arpa", order=3, vocab=vocab)
    assert summary["skipped_oov_sentences"] == 1
    words = ["<eps>", *sorted(vocab), "<s>", "</s>", "#0", "<unk>"]
    (tmp_path / "words.txt").write_text("".join(f"{w} {i}\n" for i, w in enumerate(words)))
    import kaldi_hmm_gmm  # noqa: F401  (import order: kaldilm last)
    import kaldifst
    import kaldilm

    fst_text = kaldilm.arpa2fst(str(tmp_path / "lm.arpa"), disambig_symbol="#0",
                                read_symbol_table=str(tmp_path / "words.txt"))
    g = kaldifst.compile(s=fst_text, acceptor=False)
    # one G state per history (bigram contexts + unigram contexts + start/back-off states)
    assert g.num_states >= len(lm.read_arpa(tmp_path / "lm.arpa").orders[1]) // 2
