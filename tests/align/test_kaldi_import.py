"""Importing Kaldi alignments: pdf-id text (ali-to-pdf), transition-id ali.*.gz + final.mdl."""

from __future__ import annotations

import gzip
import io

import kaldiio
import numpy as np
import pytest

from asr_kd.align.kaldi_import import length_problem, read_tid2pdf
from asr_kd.stages._kaldi_import import import_kaldi_alignments
from asr_kd.config import load_config
from asr_kd.data.scp import load_scp
from asr_kd.paths import RunPaths
from asr_kd.errors import InputError

FRAMES = {"train": {"a": 10, "b": 8, "c": 6}, "dev": {"d": 5}, "test": {"e": 4}}


@pytest.fixture()
def paths(tmp_path) -> RunPaths:
    paths = RunPaths(tmp_path / "exp")
    for split, utts in FRAMES.items():
        scp = paths.fbank_scp(split)
        scp.parent.mkdir(parents=True, exist_ok=True)
        feats = {u: np.zeros((n, 40), dtype=np.float32) for u, n in utts.items()}
        kaldiio.save_ark(str(scp.with_suffix(".ark")), feats, scp=str(scp))
    return paths


def cfg(src, max_fail: float = 0.01):
    return load_config("smoke", {"align.source": "kaldi", "align.kaldi_ali_dir": str(src),
                                 "align.max_fail_fraction": str(max_fail)})


def read_scp(path) -> dict[str, list[int]]:
    return {u: np.asarray(v).tolist() for u, v in load_scp(path).items()}


def test_pdf_text_imports_and_a_length_mismatch_is_named(tmp_path, paths):
    labels = {"a": [0, 0, 1, 1, 1, 2, 2, 5, 5, 0], "b": [3] * 8, "c": [4] * 5, "d": [1] * 5, "e": [2] * 4}
    src = tmp_path / "pdf.txt"
    src.write_text("".join(f"{u} {' '.join(map(str, v))}\n" for u, v in labels.items()))
    summary = import_kaldi_alignments(cfg(src, max_fail=0.5), paths)
    assert read_scp(paths.pdf_scp("train")) == {"a": labels["a"], "b": labels["b"]}
    assert read_scp(paths.pdf_scp("dev")) == {"d": labels["d"]}
    assert summary["num_pdfs"] == 6 and summary["source"] == "kaldi"
    assert summary["model"] == {"decodable": False, "missing": "final.mdl and tree"}  # labels only: no HMM
    assert not paths.final_mdl.exists()
    assert summary["success_rate"] == pytest.approx(2 / 3)
    assert summary["length_mismatches"] == 1
    assert "c 5 labels for 6 frames" in (paths.align / "train" / "failed.txt").read_text()
    with pytest.raises(InputError, match="failed.txt"):
        import_kaldi_alignments(cfg(src, max_fail=0.01), paths)


def test_subsampled_alignments_are_recognised():
    assert "subsampling factor 3" in length_problem(34, 100)
    assert length_problem(100, 100) is None
    assert "frame shift" in length_problem(90, 100)


def test_transition_ids_map_to_pdfs_with_final_mdl(tmp_path, paths):
    from asr_kd.align.model import init_monophone, save_model
    from asr_kd.data.lang import build_lexicon, write_lang

    lex = {"CAT": [("K", "AE", "T")], "DOG": [("D", "AO", "G")]}
    lexicon, _ = build_lexicon(lex, lex, position_dependent=False)
    lang = write_lang(paths.lang, lexicon, 0.5, False)
    model = init_monophone(lang.topology(), np.zeros(39), np.ones(39))
    src = tmp_path / "tri_ali"
    save_model(model, src / "final.mdl", src / "tree")
    tid2pdf = model.tid2pdf()
    np.testing.assert_array_equal(read_tid2pdf(src / "final.mdl"), tid2pdf)

    rng = np.random.default_rng(0)
    num_tids = int(model.trans_model.num_transition_ids)
    tids = {u: rng.integers(1, num_tids + 1, n).astype(np.int32) for s in FRAMES.values() for u, n in s.items()}
    for job, utts in ((1, ["a", "b", "c"]), (2, ["d", "e"])):
        buf = io.BytesIO()
        kaldiio.save_ark(buf, {u: tids[u] for u in utts})
        with gzip.open(src / f"ali.{job}.gz", "wb") as f:
            f.write(buf.getvalue())
    summary = import_kaldi_alignments(cfg(src), paths)
    assert summary["success_rate"] == 1.0 and summary["context"] == "monophone"
    assert summary["input_kind"] == "transition ids + final.mdl"
    pdfs = read_scp(paths.pdf_scp("train"))
    for u in ("a", "b", "c"):
        assert pdfs[u] == tid2pdf[tids[u]].tolist()
    assert read_scp(paths.ali_scp("test"))["e"] == tids["e"].tolist()
    # the model and tree come along for the graph stage, byte for byte; our lang/ serves (no phones.txt to map)
    assert summary["model"]["decodable"] and summary["model"]["lang"]["dir"] == "lang"
    assert paths.final_mdl.read_bytes() == (src / "final.mdl").read_bytes()
    assert paths.tree.read_bytes() == (src / "tree").read_bytes()


def test_missing_source_is_a_clear_error(tmp_path, paths):
    with pytest.raises(InputError, match="does not exist"):
        import_kaldi_alignments(cfg(tmp_path / "nope"), paths)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="neither ali"):
        import_kaldi_alignments(cfg(tmp_path / "empty"), paths)


def kaldi_binary_transition_model(topo_text: str, tuples: list[tuple[int, int, int, int]]) -> bytes:
    """Kaldi's binary TransitionModel layout (HmmTopology::Write + <Triples> + <LogProbs>), encoded
    here by hand from Kaldi's Write functions, independently of asr_kd.align.kaldi_format's writer."""
    import struct

    from asr_kd.align.kaldi_format import _text_topology

    phones, phone2entry, entries = _text_topology(topo_text)
    phone2idx = [phone2entry.get(p, -1) for p in range(max(phones) + 1)]

    def i32(v: int) -> bytes:
        return b"\x04" + struct.pack("<i", v)

    def ivec(v: list[int]) -> bytes:
        return b"\x04" + struct.pack(f"<i{len(v)}i", len(v), *v)

    out = b"\0B<TransitionModel> <Topology> " + ivec(phones) + ivec(phone2idx) + i32(len(entries))
    num_tids = 0
    for states in entries:
        out += i32(len(states))
        for forward, _self_loop, transitions in states:
            out += i32(forward) + i32(len(transitions))
            for d, _prob in transitions:
                out += i32(d) + b"\x04" + struct.pack("<f", 0.5)
    out += b"</Topology> <Triples> " + i32(len(tuples))
    for phone, hmm_state, forward_pdf, _ in tuples:
        out += i32(phone) + i32(hmm_state) + i32(forward_pdf)
        num_tids += len(entries[phone2entry[phone]][hmm_state][2])
    log_probs = b"FV " + i32(num_tids + 1) + struct.pack(f"<{num_tids + 1}f", *([0.0] + [-0.5] * num_tids))
    return out + b"</Triples> <LogProbs> " + log_probs + b"</LogProbs> </TransitionModel> "


def test_binary_final_mdl_gives_the_same_mapping(tmp_path):
    from asr_kd.align.model import init_monophone
    from asr_kd.data.lang import build_lexicon, write_lang

    lex = {"CAT": [("K", "AE", "T")], "DOG": [("D", "AO", "G")]}
    lexicon, _ = build_lexicon(lex, lex, position_dependent=False)
    lang = write_lang(tmp_path / "lang", lexicon, 0.5, False)
    model = init_monophone(lang.topology(), np.zeros(39), np.ones(39))
    tuples = [tuple(t.__getstate__()) for t in model.trans_model.tuples]
    (tmp_path / "final.mdl").write_bytes(kaldi_binary_transition_model(lang.topo_text, tuples))
    np.testing.assert_array_equal(read_tid2pdf(tmp_path / "final.mdl"), model.tid2pdf())
