"""A hand-made tiny lang + monophone model for the graph/decode tests (independent of the lang stage).

Four words (``KNOW`` and ``NO`` are homophones, so ``#1``/``#2`` are needed), SIL plus 8 phones,
Kaldi's 3-state topology (1-state-per-pdf-class left-to-right) and a monophone tree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import kaldi_hmm_gmm as khg
import kaldifst
import numpy as np

LEXICON = {"YES": ("Y", "EH", "S"), "NO": ("N", "OW"), "KNOW": ("N", "OW"), "MAYBE": ("M", "EY", "B", "IY")}
DISAMBIG = {"NO": "#1", "KNOW": "#2"}
PHONES = ["<eps>", "SIL", "B", "EH", "EY", "IY", "M", "N", "OW", "S", "Y", "#0", "#1", "#2"]
WORDS = ["<eps>", "KNOW", "MAYBE", "NO", "YES", "#0", "<s>", "</s>"]
LM_TEXT = ["YES NO MAYBE", "NO NO YES", "MAYBE YES", "YES KNOW", "NO MAYBE YES NO", "YES YES NO"]


@dataclass
class TinyLang:
    dir: Path
    phones: dict[str, int]
    words: dict[str, int]
    l_disambig: kaldifst.StdVectorFst
    disambig_phones: tuple[int, ...]
    topo: khg.HmmTopology
    tree: khg.ContextDependency
    trans_model: khg.TransitionModel

    @property
    def words_txt(self) -> Path:
        return self.dir / "words.txt"

    def pdfs_of(self, phone: str) -> list[int]:
        """pdf ids of the HMM states of ``phone`` in order (monophone tree: one pdf per state)."""
        pid = self.phones[phone]
        n = 5 if phone == "SIL" else 3
        out = []
        for pdf_class in range(n):
            ok, pdf = self.tree.compute([pid], pdf_class)
            assert ok, (phone, pdf_class)
            out.append(pdf)
        return out


def _topo_text(nonsil: list[int], sil: int) -> str:
    lines = ["<Topology>", "<TopologyEntry>", "<ForPhones>", " ".join(map(str, nonsil)), "</ForPhones>"]
    for s in range(3):
        lines.append(f"<State> {s} <PdfClass> {s} <Transition> {s} 0.75 <Transition> {s + 1} 0.25 </State>")
    lines += ["<State> 3 </State>", "</TopologyEntry>", "<TopologyEntry>", "<ForPhones>", str(sil), "</ForPhones>"]
    for s in range(4):
        lines.append(f"<State> {s} <PdfClass> {s} <Transition> {s} 0.75 <Transition> {s + 1} 0.25 </State>")
    lines.append("<State> 4 <PdfClass> 4 <Transition> 4 0.75 <Transition> 5 0.25 </State>")
    lines += ["<State> 5 </State>", "</TopologyEntry>", "</Topology>"]
    return "\n".join(lines) + "\n"


def _lexicon_fst(phones: dict[str, int], words: dict[str, int], sil_prob: float = 0.5) -> kaldifst.StdVectorFst:
    """Start -> loop (optionally through SIL); words leave and re-enter the loop state, SIL optional after."""
    sil_cost, no_sil = -math.log(sil_prob), -math.log(1 - sil_prob)
    fst = kaldifst.StdVectorFst()
    start, loop, sil_state = fst.add_state(), fst.add_state(), fst.add_state()
    fst.start = start
    fst.add_arc(start, kaldifst.StdArc(0, 0, no_sil, loop))
    fst.add_arc(start, kaldifst.StdArc(0, 0, sil_cost, sil_state))
    fst.add_arc(sil_state, kaldifst.StdArc(phones["SIL"], 0, 0.0, loop))
    for word, pron in LEXICON.items():
        seq = [*pron, *([DISAMBIG[word]] if word in DISAMBIG else [])]
        src = loop
        for i, p in enumerate(seq[:-1]):
            nxt = fst.add_state()
            fst.add_arc(src, kaldifst.StdArc(phones[p], words[word] if i == 0 else 0, 0.0, nxt))
            src = nxt
        fst.add_arc(src, kaldifst.StdArc(phones[seq[-1]], 0, no_sil, loop))
        fst.add_arc(src, kaldifst.StdArc(phones[seq[-1]], 0, sil_cost, sil_state))
    fst.add_arc(loop, kaldifst.StdArc(phones["#0"], words["#0"], 0.0, loop))
    fst.set_final(loop, 0.0)
    kaldifst.arcsort(fst, sort_type="olabel")
    return fst


def make_tiny_lang(root: Path) -> TinyLang:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    phones = {p: i for i, p in enumerate(PHONES)}
    words = {w: i for i, w in enumerate(WORDS)}
    (root / "words.txt").write_text("".join(f"{w} {i}\n" for w, i in words.items()))
    (root / "phones.txt").write_text("".join(f"{p} {i}\n" for p, i in phones.items()))
    nonsil = [i for p, i in phones.items() if p not in ("<eps>", "SIL") and not p.startswith("#")]
    topo = khg.HmmTopology()
    topo.read(_topo_text(nonsil, phones["SIL"]))
    tree = khg.monophone_context_dependency(
        phones=topo.phones, phone2num_pdf_classes=topo.get_phone_to_num_pdf_classes()
    )
    tm = khg.TransitionModel(ctx_dep=tree, hmm_topo=topo)
    disambig = tuple(phones[p] for p in ("#0", "#1", "#2"))
    return TinyLang(root, phones, words, _lexicon_fst(phones, words), disambig, topo, tree, tm)


def build_tiny_graph(root: Path) -> tuple[TinyLang, object, dict]:
    """The tiny lang, a trigram LM on LM_TEXT and their HCLG under ``root/graph``.

    Returns (lang, graph inputs, make_graph's info).
    """
    from asr_kd.decoding import graph, lm

    lang = make_tiny_lang(root / "lang")
    (root / "text.txt").write_text("\n".join(LM_TEXT) + "\n")
    lm.build_arpa(root / "text.txt", root / "lm.arpa", order=3, vocab=set(LEXICON))
    inputs = graph.GraphInputs(lang.l_disambig, lang.disambig_phones, lang.words_txt, lang.trans_model, lang.tree)
    info = graph.make_graph(inputs, root / "lm.arpa", root / "graph", [lang.words_txt])
    return lang, inputs, info


def posteriorgram(lang: TinyLang, words: list[str], frames_per_state: int = 3, peak: float = 0.9,
                  seed: int = 0) -> np.ndarray:
    """(T, num_pdfs) log-posteriors of a clean utterance: SIL, the words' phones, SIL; noisy peaks."""
    rng = np.random.default_rng(seed)
    phones = ["SIL", *[p for w in words for p in LEXICON[w]], "SIL"]
    pdf_seq = [pdf for p in phones for pdf in lang.pdfs_of(p) for _ in range(frames_per_state)]
    n = lang.trans_model.num_pdfs
    post = rng.uniform(0.5, 1.5, size=(len(pdf_seq), n)) * (1 - peak) / n  # (T, N)
    post[np.arange(len(pdf_seq)), pdf_seq] = peak
    post /= post.sum(axis=1, keepdims=True)
    return np.log(post).astype(np.float32)
