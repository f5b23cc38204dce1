"""Tests for asr_kd.align.tree: statistics, questions, greedy splits, merging, and the Kaldi tree format."""

from __future__ import annotations

import math

import kaldi_hmm_gmm as khg
import kaldifst
import numpy as np
import pytest

from asr_kd.align import tree as T
from asr_kd.data.lang import mark_positions, write_lang

LEXICON = [
    ("AB", ("AA", "B")),
    ("BEE", ("B", "IY")),
    ("SEA", ("S", "IY")),
    ("ASS", ("AA", "S")),
    ("BUS", ("B", "AA", "S")),
]


# ------------------------------------------------------------------------------------------------
# Hand-made statistics
# ------------------------------------------------------------------------------------------------
def _stats(rows: list[tuple[tuple[int, int, int, int], float, list[float], list[float]]]) -> T.TreeStats:
    """rows: ((left, centre, right, pdf_class), count, mean, var) -> exact sufficient statistics."""
    keys = np.array([r[0] for r in rows], np.int32)
    count = np.array([r[1] for r in rows], float)
    mean = np.array([r[2] for r in rows], float)
    var = np.array([r[3] for r in rows], float)
    return T.TreeStats(keys=keys, count=count, sum=count[:, None] * mean,
                       sumsq=count[:, None] * (var + mean * mean))


def _hand_stats() -> T.TreeStats:
    # Centre phone 2, pdf-class 0 only. Left context 3 moves the mean by 4 (a large gain); right
    # context 5 moves it by 1 (a smaller gain).
    rows = []
    for left in (3, 4, 5):
        for right in (3, 4, 5):
            mean = [4.0 * (left == 3) + 1.0 * (right == 5), 0.0]
            rows.append(((left, 2, right, 0), 100.0, mean, [1.0, 1.0]))
    return _stats(rows)


def _questions(phone_sets: list[tuple[int, ...]]) -> T.Questions:
    return T.Questions(phone_sets=tuple(phone_sets), pdf_class_sets=())


def _gain(stats: T.TreeStats, yes: np.ndarray) -> float:
    def objf(m: np.ndarray) -> float:
        return float(T.gaussian_objf(stats.count[m].sum(), stats.sum[m].sum(0), stats.sumsq[m].sum(0), 0.01))

    return objf(yes) + objf(~yes) - objf(np.ones(len(yes), bool))


def test_gaussian_objf_matches_closed_form() -> None:
    x = np.random.default_rng(0).normal(size=(500, 3)) * [1.0, 2.0, 0.5] + [1.0, -2.0, 3.0]
    objf = T.gaussian_objf(np.array(500.0), x.sum(0), (x * x).sum(0), 1e-6)
    var = x.var(0)
    z2 = (x - x.mean(0)) ** 2 / var  # (500, 3)
    direct = float((-0.5 * (z2 + np.log(2 * math.pi * var))).sum())
    assert objf == pytest.approx(direct, rel=1e-9)


def test_first_split_is_the_largest_gain() -> None:
    stats = _hand_stats()
    questions = _questions([(3,), (4,), (5,), (3, 4), (4, 5)])
    roots = [T.Root((2,), 1)]
    tree = T.build_tree(stats, roots, questions, T.TreeBuildConfig(num_leaves=2, min_count=1, merge_threshold=0))
    split = tree.root.children[2]
    assert isinstance(split, T.Split)
    assert split.key == T.KEY_LEFT and split.yes_set in ({3}, {4, 5})
    best = _gain(stats, stats.keys[:, 0] == 3)
    for key_col, q in [(0, (4,)), (0, (5,)), (2, (5,)), (2, (3,)), (2, (3, 4))]:
        assert _gain(stats, np.isin(stats.keys[:, key_col], q)) < best
    assert tree.info["num_splits"] == 1 and tree.num_pdfs == 2


def test_second_split_uses_the_right_context() -> None:
    stats = _hand_stats()
    tree = T.build_tree(stats, [T.Root((2,), 1)], _questions([(3,), (4,), (5,), (3, 4)]),
                        T.TreeBuildConfig(num_leaves=3, min_count=1, merge_threshold=0))
    split = tree.root.children[2]
    children = [split.yes, split.no]
    assert any(isinstance(c, T.Split) and c.key == T.KEY_RIGHT for c in children)
    assert tree.compute(3, 2, 5, 0) != tree.compute(4, 2, 5, 0)
    assert tree.compute(4, 2, 3, 0) == tree.compute(5, 2, 4, 0)


def test_min_count_blocks_small_leaves() -> None:
    stats = _hand_stats()
    # Left context 3 has 300 frames: with min_count 400 the best question cannot be used.
    tree = T.build_tree(stats, [T.Root((2,), 1)], _questions([(3,), (5,)]),
                        T.TreeBuildConfig(num_leaves=2, min_count=400, merge_threshold=0))
    assert tree.num_pdfs == 1 and tree.info["num_splits"] == 0


def test_merge_joins_leaves_that_lose_little() -> None:
    # Two pdf-classes with identical data and one that differs: after splitting to 3 leaves, the
    # two identical ones merge into one pdf.
    rows = [((0, 2, 0, c), 200.0, [0.0] if c < 2 else [5.0], [1.0]) for c in range(3)]
    stats = _stats(rows)
    questions = T.Questions(phone_sets=(), pdf_class_sets=tuple(T.pdf_class_questions(3)))
    cfg = T.TreeBuildConfig(num_leaves=3, min_count=1, min_gain=-1.0, merge_threshold=1.0)
    tree = T.build_tree(stats, [T.Root((2,), 3)], questions, cfg)
    assert tree.info["num_leaves_before_merge"] == 3 and tree.info["num_merged"] == 1
    assert tree.num_pdfs == 2
    assert tree.compute(0, 2, 0, 0) == tree.compute(0, 2, 0, 1) != tree.compute(0, 2, 0, 2)


def test_shared_root_splits_on_the_centre_phone() -> None:
    # AA_B (2) and AA_E (3) share a root; their data differ, their contexts do not matter.
    rows = [((left, centre, 4, 0), 100.0, [3.0 * (centre == 3)], [1.0]) for centre in (2, 3) for left in (4, 5)]
    symbols = {2: "AA_B", 3: "AA_E", 4: "B_S", 5: "M_B"}
    questions = _questions(T.position_questions(symbols, symbols) + [(4,), (5,)])
    assert (2, 5) in questions.phone_sets  # all word-begin phones
    tree = T.build_tree(_stats(rows), [T.Root((2, 3), 1)], questions,
                        T.TreeBuildConfig(num_leaves=2, min_count=1, merge_threshold=0))
    split = tree.root.children[2]
    assert split is tree.root.children[3]  # one node serves both phones of the root
    assert isinstance(split, T.Split) and split.key == T.KEY_CENTRE
    assert tree.compute(4, 2, 4, 0) != tree.compute(4, 3, 4, 0)


def test_cluster_phones_groups_similar_phones() -> None:
    rows = []
    means = {2: 0.0, 3: 0.2, 4: 6.0, 5: 6.3, 6: 20.0}
    for p, m in means.items():
        rows.append(((0, p, 0, 1), 100.0, [m, 0.0], [1.0, 1.0]))
    sets = T.cluster_phones(_stats(rows), [(p,) for p in means])
    assert (2, 3) in sets and (4, 5) in sets and (2, 3, 4, 5) in sets
    assert (2, 3, 4, 5, 6) in sets and len(sets) == 2 * len(means) - 1


def test_table_questions_use_base_phones() -> None:
    symbols = {2: "AA_B", 3: "AA_E", 4: "B_S", 5: "M_B"}
    sets = T.table_questions(symbols, symbols)
    assert (2, 3) in sets  # vowels
    assert (4,) in sets  # stops
    assert T.phone_groups(symbols, symbols) == [(2, 3), (4,), (5,)]


# ------------------------------------------------------------------------------------------------
# A tiny synthetic system: lang, monophone model, alignments whose features depend on context
# ------------------------------------------------------------------------------------------------
def _path_tids(tm: khg.TransitionModel, first_state: int, n_states: int, durations: list[int], sil: bool,
               reorder: bool = False) -> list[int]:
    """Transition ids of one phone: state h stays durations[h] frames, left to right.

    ``reorder``: Kaldi's reordered form (each state's forward transition before its self-loops),
    as kaldi-hmm-gmm's aligner returns.
    """
    state2id = tm.state2id
    tids = []
    for h, dur in enumerate(durations):
        s = first_state + h
        base = state2id[s]
        if sil:  # Kaldi's silence topology: state 0 [0,1,2,3], states 1-3 [1,2,3,4], state 4 [4,final]
            self_idx = 0 if h in (0, n_states - 1) else h - 1
            fwd_idx = 1 if h in (0, n_states - 1) else h
        else:
            self_idx, fwd_idx = 0, 1
        loops = [base + self_idx] * (dur - 1)
        tids += [base + fwd_idx, *loops] if reorder else [*loops, base + fwd_idx]
    return tids


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> dict:
    lang = write_lang(tmp_path_factory.mktemp("lang"), LEXICON, sil_prob=0.5, position_dependent=False)
    topo = lang.topology()
    phones = sorted(lang.silence_phones + lang.nonsilence_phones)
    n_classes = list(topo.get_phone_to_num_pdf_classes())
    mono = khg.monophone_context_dependency(phones, n_classes)
    tm = khg.TransitionModel(mono, topo)
    # transition states: one per (phone, hmm-state), in phone order
    first_state, s = {}, 1
    for p in phones:
        first_state[p] = s
        s += n_classes[p]
    rng = np.random.default_rng(1)
    sil = lang.sil_phone
    utts = []
    for _ in range(60):
        seq = [sil, *rng.choice(lang.nonsilence_phones, size=rng.integers(3, 8)).tolist(), sil]
        tids, feats = [], []
        for i, p in enumerate(seq):
            right = seq[i + 1] if i + 1 < len(seq) else 0
            left = seq[i - 1] if i > 0 else 0
            durs = rng.integers(2, 6, size=n_classes[p]).tolist()
            tids += _path_tids(tm, first_state[p], n_classes[p], durs, sil=p == sil, reorder=len(utts) % 2 == 1)
            for c, d in enumerate(durs):
                right_effect = 2.0 * (right == phones[2] and c == n_classes[p] - 1)
                mean = np.array([p * 3.0 + c, right_effect, 1.5 * (left == sil)])
                feats.append(mean + 0.3 * rng.normal(size=(d, 3)))
        utts.append((np.concatenate(feats), np.array(tids)))
    return {"lang": lang, "topo": topo, "phones": phones, "n_classes": n_classes, "mono": mono, "tm": tm,
            "utts": utts, "first_state": first_state}


def test_transition_table_of_monophone_model(system: dict) -> None:
    tm, n_classes = system["tm"], system["n_classes"]
    table = T.transition_table(tm)
    for tid in range(1, tm.num_transition_ids + 1):
        phone, pdf = tm.transition_id_to_phone(tid), tm.transition_id_to_pdf(tid)
        ok, expected = system["mono"].compute([phone], int(table.pdf_class[tid]))
        assert table.phone[tid] == phone and ok and expected == pdf
    assert table.is_final.sum() == len(system["phones"])  # one exit transition per phone
    assert set(table.pdf_class[1:]) == set(range(max(n_classes)))


@pytest.mark.parametrize("reorder", [False, True])
def test_phone_ends_in_plain_and_reordered_alignments(system: dict, reorder: bool) -> None:
    tm, first, n_classes = system["tm"], system["first_state"], system["n_classes"]
    table = T.transition_table(tm)
    sil, aa = system["lang"].sil_phone, system["lang"].phones["AA"]
    # SIL, AA, AA (the same phone twice), SIL; last states held for several frames
    parts = [(sil, [2, 1, 1, 1, 3]), (aa, [2, 1, 3]), (aa, [1, 2, 2]), (sil, [1, 1, 1, 1, 4])]
    ali = np.array([t for p, d in parts for t in _path_tids(tm, first[p], n_classes[p], d, p == sil, reorder)])
    lengths = [sum(d) for _, d in parts]
    np.testing.assert_array_equal(np.flatnonzero(T.phone_ends(ali, table)), np.cumsum(lengths) - 1)
    left, centre, right, clean = T.phone_contexts(ali, table)
    assert clean
    expected = [(0, sil, aa), (sil, aa, aa), (aa, aa, sil), (aa, sil, 0)]
    got = sorted({(int(a), int(b), int(c), int(np.searchsorted(np.cumsum(lengths), t, side="right")))
                  for t, (a, b, c) in enumerate(zip(left, centre, right))}, key=lambda x: x[3])
    assert [g[:3] for g in got] == expected
    # dropping the last frame: a plain alignment loses its final transition, a reordered one a self-loop
    assert T.phone_contexts(ali[:-1], table)[3] == reorder


def test_accumulated_stats_add_up(system: dict) -> None:
    table = T.transition_table(system["tm"])
    acc = T.TreeStatsAccumulator(table, flush_frames=200)  # several flushes
    for feats, ali in system["utts"]:
        acc.add(feats, ali)
    stats = acc.stats()
    frames = np.concatenate([f for f, _ in system["utts"]])
    assert stats.num_frames == len(frames)
    np.testing.assert_allclose(stats.sum.sum(0), frames.sum(0), rtol=1e-9)
    np.testing.assert_allclose(stats.sumsq.sum(0), (frames**2).sum(0), rtol=1e-9)
    assert len(np.unique(stats.keys, axis=0)) == len(stats)
    # the first utterance's first frame: silence after the utterance edge, pdf-class 0
    first = system["utts"][0]
    _, c0, r0, _ = T.phone_contexts(first[1], table)
    assert ((stats.keys == [0, c0[0], r0[0], 0]).all(1)).any()


@pytest.fixture(scope="module")
def built(system: dict) -> dict:
    lang = system["lang"]
    stats = T.accumulate_tree_stats(system["utts"], T.transition_table(system["tm"]))
    symbols = lang.phone_symbols
    questions = T.make_questions(stats, symbols, system["phones"], max(system["n_classes"]))
    roots = T.default_roots(symbols, lang.nonsilence_phones, lang.silence_phones, system["n_classes"])
    tree = T.build_tree(stats, roots, questions, T.TreeBuildConfig(num_leaves=30, min_count=20))
    return {"stats": stats, "tree": tree, "roots": roots}


def test_tree_gives_every_triphone_one_leaf(system: dict, built: dict) -> None:
    tree, lang = built["tree"], system["lang"]
    events = T.all_events(system["phones"], system["n_classes"])
    assert len(np.unique(events, axis=0)) == len(events) == (4 * 3 + 5) * 6 * 6  # 4 phones x 3 classes, SIL x 5
    pdfs = [tree.compute(*ev) for ev in events.tolist()]
    assert set(pdfs) == set(range(tree.num_pdfs))
    np.testing.assert_array_equal(tree.compute_many(events), pdfs)
    assert len(system["phones"]) * 3 + 2 < tree.num_pdfs <= 30  # more than a monophone system
    # silence is not split on context: one pdf per pdf-class whatever the neighbours
    sil = lang.sil_phone
    for c in range(5):
        assert len({tree.compute(l, sil, r, c) for l in system["phones"] for r in system["phones"]}) == 1
    # the feature that depends on the right context (phones[2]) is split on in the last state
    p = lang.nonsilence_phones[0]
    assert tree.compute(sil, p, system["phones"][2], 2) != tree.compute(sil, p, sil, 2)


def test_tree_likelihood_beats_monophone(system: dict, built: dict) -> None:
    stats, tree = built["stats"], built["tree"]
    mono_objf = 0.0
    for key in {(c, k) for c, k in stats.keys[:, [1, 3]].tolist()}:
        m = (stats.keys[:, 1] == key[0]) & (stats.keys[:, 3] == key[1])
        mono_objf += float(T.gaussian_objf(stats.count[m].sum(), stats.sum[m].sum(0), stats.sumsq[m].sum(0), 0.01))
    assert tree.info["objf_per_frame"] > mono_objf / stats.num_frames
    assert tree.info["monophone_objf_per_frame"] == pytest.approx(mono_objf / stats.num_frames)


def test_kaldi_round_trip(system: dict, built: dict, tmp_path) -> None:
    tree = built["tree"]
    path = tmp_path / "tree"
    T.write_tree(path, tree)
    assert path.read_bytes().startswith(b"\0BContextDependency ")
    again = T.read_tree(path)
    assert again.root == tree.root and again.num_pdfs == tree.num_pdfs
    ctx = T.load_context_dependency(path)
    assert (ctx.context_width, ctx.central_position, ctx.num_pdfs) == (3, 1, tree.num_pdfs)
    checked = T.check_context_dependency(tree, ctx, system["phones"], system["n_classes"])
    assert checked == sum(system["n_classes"][p] for p in system["phones"]) * (len(system["phones"]) + 1) ** 2
    assert T.check_context_dependency(tree, ctx, system["phones"], system["n_classes"], max_events=50) == 50
    # a tree that differs is caught
    other = T.tree_to_context_dependency(T.Tree(T.Table(1, [None] + [T.Leaf(0)] * 5), num_pdfs=1))
    with pytest.raises(ValueError, match="kaldi tree gives"):
        T.check_context_dependency(tree, other, system["phones"], system["n_classes"])
    # Kaldi writes back exactly the bytes we wrote
    ctx.write(True, str(tmp_path / "tree.kaldi"))
    assert (tmp_path / "tree.kaldi").read_bytes() == path.read_bytes()


def test_reader_names_the_file_on_bad_input(tmp_path) -> None:
    bad = tmp_path / "tree"
    bad.write_bytes(b"\0BNotATree ")
    with pytest.raises(T.TreeFormatError, match=str(bad)):
        T.read_tree(bad)


def test_reads_kaldi_monophone_tree(system: dict, tmp_path) -> None:
    system["mono"].write(True, str(tmp_path / "mono"))
    mono = T.read_tree(tmp_path / "mono")
    for p in system["phones"]:
        for c in range(system["n_classes"][p]):
            assert mono.compute(0, p, 0, c) == system["mono"].compute([p], c)[1]


def test_triphone_model_graphs_and_transition_table(system: dict, built: dict) -> None:
    lang, tree = system["lang"], built["tree"]
    ctx = T.tree_to_context_dependency(tree)
    tm = khg.TransitionModel(ctx, system["topo"])
    assert tm.num_pdfs == tree.num_pdfs
    # the transition table of a triphone model: pdf-class found for each transition state
    table = T.transition_table(tm)
    info = ctx.get_pdf_info(system["phones"], system["n_classes"])
    for tid in range(1, tm.num_transition_ids + 1):
        pairs = info[tm.transition_id_to_pdf(tid)]
        assert (int(table.phone[tid]), int(table.pdf_class[tid])) in [tuple(x) for x in pairs]
    # training graph for a transcript, with context width 3
    opts = khg.TrainingGraphCompilerOptions(transition_scale=0.0, self_loop_scale=0.0)
    compiler = khg.TrainingGraphCompiler(tm, ctx, lang.read_l_fst(disambig=True), list(lang.disambig_phones), opts)
    graph = compiler.compile_graph_from_text(lang.word_ids(["BUS", "SEA"]))
    assert graph.num_states > 0
    # HCLG with a word-loop G
    from asr_kd.decoding.graph import GraphInputs, build_hclg

    words = [lang.words[w] for w, _ in LEXICON]
    g = kaldifst.compile(s="".join(f"0 0 {w} {w}\n" for w in words) + "0\n", acceptor=False)
    kaldifst.arcsort(g, sort_type="ilabel")
    inputs = GraphInputs(lang.read_l_fst(disambig=True), tuple(lang.disambig_phones), lang.dir / "words.txt", tm, ctx)
    hclg, info = build_hclg(inputs, g)
    assert info["context_width"] == 3 and info["HCLG"]["arcs"] > 0


def test_position_dependent_phones_share_roots(tmp_path) -> None:
    marked = [(w, mark_positions(pron)) for w, pron in LEXICON]
    lang = write_lang(tmp_path / "lang", marked, sil_prob=0.5, position_dependent=True)
    topo = lang.topology()
    n_classes = list(topo.get_phone_to_num_pdf_classes())
    phones = sorted(lang.silence_phones + lang.nonsilence_phones)
    rng = np.random.default_rng(0)
    keys = np.stack([rng.choice([0, *phones], 3000), rng.choice(phones, 3000), rng.choice([0, *phones], 3000),
                     rng.integers(0, 3, 3000)], 1)
    keys = np.unique(keys, axis=0)
    mean = keys[:, [1]] * 0.5 + keys[:, [3]] + (keys[:, [2]] % 4 == 0)  # (M, 1)
    rows = [(tuple(k), 30.0, list(m), [1.0]) for k, m in zip(keys.tolist(), mean)]
    stats = _stats(rows)
    symbols = lang.phone_symbols
    roots = T.default_roots(symbols, lang.nonsilence_phones, lang.silence_phones, n_classes)
    assert len(roots) == 1 + 4  # SIL + one root per base phone (AA, B, IY, S), each with _B _E _I _S
    questions = T.make_questions(stats, symbols, phones, 5)
    tree = T.build_tree(stats, roots, questions, T.TreeBuildConfig(num_leaves=60, min_count=30))
    ctx = T.tree_to_context_dependency(tree)
    tm = khg.TransitionModel(ctx, topo)
    assert tm.num_pdfs == tree.num_pdfs > 5 + 4 * 3
    assert T.check_context_dependency(tree, ctx, phones, n_classes, max_events=2000) == 2000
