"""HCLG construction on a hand-made tiny lexicon + trigram LM (see tests/graph_fixture.py)."""

from __future__ import annotations

import kaldifst
import pytest

from asr_kd.decoding import graph, lm
from tests.graph_fixture import LEXICON, build_tiny_graph


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("graph")
    lang, inputs, info = build_tiny_graph(root)
    return root, lang, inputs, info


def _labels(fst: kaldifst.StdVectorFst) -> tuple[set[int], set[int]]:
    ins, outs = set(), set()
    for s in kaldifst.StateIterator(fst):
        for a in kaldifst.ArcIterator(fst, s):
            ins.add(a.ilabel)
            outs.add(a.olabel)
    return ins, outs


def test_hclg_labels_are_transition_ids_and_words(built) -> None:
    root, lang, _, info = built
    hclg = graph.read_hclg(root / "graph" / "HCLG.fst")
    ins, outs = _labels(hclg)
    num_tids = lang.trans_model.num_transition_ids
    assert ins <= set(range(num_tids + 1))  # no disambiguation transition ids left
    assert len(ins - {0}) == num_tids  # every transition id reachable (all phones are used)
    assert {lang.words[w] for w in LEXICON} <= outs
    assert lang.words["#0"] not in outs
    assert info["HCLG"]["states"] == hclg.num_states > 0
    assert info["disambig_transition_ids"] > 0
    assert info["cached"] is False
    assert graph.read_word_symbols(root / "graph" / "words.txt")[lang.words["YES"]] == "YES"


def test_graph_is_cached_until_an_input_changes(built) -> None:
    root, lang, inputs, info = built
    again = graph.make_graph(inputs, root / "lm.arpa", root / "graph", [lang.words_txt])
    assert again["cached"] is True
    assert again["HCLG"] == info["HCLG"]
    (root / "text2.txt").write_text("YES YES YES\nNO\n")
    lm.build_arpa(root / "text2.txt", root / "lm2.arpa", order=3, vocab=set(LEXICON))
    rebuilt = graph.make_graph(inputs, root / "lm2.arpa", root / "graph", [lang.words_txt])
    assert rebuilt["cached"] is False


def _arcs(fst: kaldifst.StdVectorFst) -> list[tuple[int, int, int, float, int]]:
    return sorted((s, a.ilabel, a.olabel, round(a.weight.value, 5), a.nextstate)
                  for s in kaldifst.StateIterator(fst) for a in kaldifst.ArcIterator(fst, s))


def test_remove_input_labels_by_composition_equals_arc_rewrite() -> None:
    fst = kaldifst.StdVectorFst()
    a, b, c = fst.add_state(), fst.add_state(), fst.add_state()
    fst.start = a
    fst.set_final(c, 0.25)
    for arc in [(a, 1, 7, 0.5, b), (a, 4, 0, 1.0, b), (b, 2, 0, 0.0, c), (b, 5, 8, 2.0, c), (b, 0, 9, 0.1, c)]:
        fst.add_arc(arc[0], kaldifst.StdArc(arc[1], arc[2], arc[3], arc[4]))
    kaldifst.arcsort(fst, sort_type="ilabel")
    composed = graph.remove_input_labels(fst, [4, 5], max_label=5)
    rewritten = fst.copy()
    assert graph.replace_ilabels_by_epsilon(rewritten, [4, 5]) == 2
    assert composed.num_states == fst.num_states
    assert sorted((x[1], x[2], x[3]) for x in _arcs(composed)) == sorted((x[1], x[2], x[3]) for x in _arcs(rewritten))
    assert {x[1] for x in _arcs(composed)} == {0, 1, 2}


def test_replace_ilabels_by_epsilon_keeps_weights_and_other_arcs() -> None:
    fst = kaldifst.StdVectorFst()
    a, b = fst.add_state(), fst.add_state()
    fst.start = a
    fst.set_final(b, 0.0)
    fst.add_arc(a, kaldifst.StdArc(5, 1, 0.5, b))
    fst.add_arc(a, kaldifst.StdArc(9, 2, 1.5, b))
    assert graph.replace_ilabels_by_epsilon(fst, [9]) == 1
    arcs = sorted((x.ilabel, x.olabel, x.weight.value) for x in kaldifst.ArcIterator(fst, a))
    assert arcs == [(0, 2, 1.5), (5, 1, 0.5)]


def test_graph_from_an_already_compiled_g_equals_one_from_the_arpa(built) -> None:
    """The monophone graph reuses the main graph's G.fst instead of compiling the LM again."""
    root, lang, inputs, _ = built
    from_g = graph.make_graph(inputs, root / "lm.arpa", root / "graph-from-g", [lang.words_txt],
                              g_fst=root / "graph" / "G.fst")
    assert from_g["cached"] is False
    assert _arcs(kaldifst.StdVectorFst.read(str(root / "graph-from-g" / "HCLG.fst"))) == \
        _arcs(kaldifst.StdVectorFst.read(str(root / "graph" / "HCLG.fst")))
