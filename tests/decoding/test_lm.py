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


# A bigram model whose scores are easy to follow by hand (log10).
TOY_BIGRAM = """
\\data\\
ngram 1=4
ngram 2=2

\\1-grams:
-99\t<s>\t-0.30103
-0.60206\tA\t-0.5
-0.30103\tB
-0.60206\t</s>

\\2-grams:
-0.1\t<s> A
-0.2\tA B

\\end\\
"""


def test_perplexity_of_a_toy_arpa_matches_the_hand_computed_value(tmp_path) -> None:
    arpa = tmp_path / "toy.arpa"
    arpa.write_text(TOY_BIGRAM)
    # "A B":   p(A|<s>) = -0.1, p(B|A) = -0.2, p(</s>|B) = bow(B) 0 + p(</s>) -0.60206  -> 3 tokens
    # "B X A": p(B|<s>) = bow(<s>) -0.30103 + p(B) -0.30103; X is an OOV: not scored, not counted;
    #          p(A|X) = p(A) -0.60206 (no context X); p(</s>|A) = bow(A) -0.5 + p(</s>) -0.60206  -> 3 tokens
    total = (-0.1 - 0.2 - 0.60206) + (-0.30103 - 0.30103 - 0.60206 - 0.5 - 0.60206)
    expected = 10 ** (-total / 6)
    got = lm.arpa_perplexity(arpa, [["A", "B"], ["B", "X", "A"]], vocab={"A", "B"})
    assert got["perplexity"] == pytest.approx(expected, rel=1e-9)
    assert (got["tokens"], got["oov_tokens"], got["scored_tokens"], got["sentences"]) == (5, 1, 6, 2)
    # the whole model read, or only the n-grams the text needs: the same numbers
    full = lm.oov_perplexity(lm.read_arpa(arpa), [["A", "B"], ["B", "X", "A"]], {"A", "B"})
    assert full["perplexity"] == pytest.approx(expected, rel=1e-9)
    assert lm.text_ngrams([["A"]], 2) == {("<s>",), ("A",), ("</s>",), ("<s>", "A"), ("A", "</s>")}
    assert lm.arpa_order(arpa) == 2


def test_user_arpa_gets_the_training_words_it_lacks(tmp_path) -> None:
    import gzip

    import kaldilm

    src = tmp_path / "user.arpa.gz"
    with gzip.open(src, "wt") as f:
        f.write(TOY_BIGRAM)
    out = tmp_path / "lm.arpa"
    added = lm.copy_arpa_adding_unigrams(src, out, {"A", "NEWWORD"})
    assert added["added_unigrams"] == 1 and added["added_log10_prob"] == pytest.approx(-0.60206)  # rarest unigram
    model = lm.read_arpa(out)
    assert model.orders[0][("NEWWORD",)] == (pytest.approx(-0.60206), 0.0)
    assert model.orders[1] == lm.read_arpa(src).orders[1]
    assert "ngram 1=5" in out.read_text()
    words = tmp_path / "words.txt"
    words.write_text("".join(f"{w} {i}\n" for i, w in enumerate(["<eps>", "A", "B", "NEWWORD", "#0", "<s>", "</s>"])))
    fst = kaldilm.arpa2fst(input_arpa=str(out), disambig_symbol="#0", read_symbol_table=str(words))
    assert any(line.split()[2:4] == ["3", "3"] for line in fst.splitlines() if len(line.split()) >= 4)
