"""The lang stage: phone set, HMM topology, lexicon FSTs and Kaldi-format symbol tables.

Owns everything under ``<exp>/lang/`` (see :mod:`asr_kd.paths`), written in the text formats of
Kaldi's ``utils/prepare_lang.sh`` so that Kaldi users recognise them::

    phones.txt      "<eps> 0", "SIL 1", the ARPAbet phones (no stress), then "#0" .. "#N"
    words.txt       "<eps> 0", the words sorted, then "#0", "<s>", "</s>"
    lexicon.txt     "WORD PH1 PH2 ..." one pronunciation a line (after position marking)
    lexicon_disambig.txt   the same with "#k" appended to homophones and prefixes
    topo            Kaldi text HMM topology: 3-state left-to-right phones, 5-state SIL
    phones/silence.csl, phones/nonsilence.csl   colon-separated phone ids
    phones/disambig.int                        ids of "#0" .. "#N", one a line
    L.fst, L_disambig.fst                      lexicon transducers (phones -> words)

The lexicon FST has optional silence between words (probability ``LangConfig.sil_prob``), as
Kaldi's ``make_lexicon_fst.py``: a loop state where words start and end, and a silence state
reached instead of the loop state with probability ``sil_prob``. ``L_disambig.fst`` adds the
disambiguation symbols and a ``#0:#0`` self-loop at the loop state (for the LM's back-off arcs).

:func:`load_lang` reads the directory back into a :class:`Lang` for the aligner and the graphs.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kaldifst

from asr_kd.data.lexicon import SIL, strip_stress
from asr_kd.fileio import atomic_open, atomic_path, read_json, write_text
from asr_kd.files import LangDir
from asr_kd.errors import InputError

log = logging.getLogger(__name__)

EPS = "<eps>"
POSITION_SUFFIXES = ("_B", "_I", "_E", "_S")

# Kaldi's prototype topologies (utils/gen_topo.pl): 3 emitting states for a phone, 5 for silence.
_PHONE_STATES = 3
_SIL_STATES = 5


@dataclass(frozen=True)
class Lang:
    """A lang directory read back: symbol tables, lexicon, topology text, disambiguation ids."""

    dir: Path
    phones: dict[str, int]  # phones.txt, including <eps> and the #k disambiguation symbols
    words: dict[str, int]  # words.txt, including <eps>, #0, <s>, </s>
    lexicon: dict[str, list[tuple[str, ...]]]  # word -> pronunciations (as in lexicon.txt)
    silence_phones: tuple[int, ...]
    nonsilence_phones: tuple[int, ...]
    disambig_phones: tuple[int, ...]  # ids of #0..#N in phones.txt
    topo_text: str  # Kaldi text topology (HmmTopology.read accepts it)
    sil_prob: float
    position_dependent: bool

    @property
    def sil_phone(self) -> int:
        return self.phones[SIL]

    @property
    def phone_symbols(self) -> dict[int, str]:
        return {i: p for p, i in self.phones.items()}

    @property
    def word_symbols(self) -> dict[int, str]:
        return {i: w for w, i in self.words.items()}

    @property
    def words_txt_path(self) -> Path:
        return LangDir(self.dir).words

    @property
    def l_fst_path(self) -> Path:
        return LangDir(self.dir).l_fst

    @property
    def l_disambig_fst_path(self) -> Path:
        return LangDir(self.dir).l_disambig_fst

    def read_l_fst(self, disambig: bool = False) -> kaldifst.StdVectorFst:
        """L.fst (or L_disambig.fst) as a kaldifst.StdVectorFst."""
        return kaldifst.StdVectorFst.read(str(self.l_disambig_fst_path if disambig else self.l_fst_path))

    def topology(self) -> Any:
        """A ``kaldi_hmm_gmm.HmmTopology`` read from the topo text."""
        import kaldi_hmm_gmm as khg

        topo = khg.HmmTopology()
        topo.read(self.topo_text)
        return topo

    def word_ids(self, words: Sequence[str]) -> list[int]:
        """Word ids of a transcript; KeyError naming the first word not in words.txt."""
        out = []
        for w in words:
            if w not in self.words:
                raise KeyError(w)
            out.append(self.words[w])
        return out


# ------------------------------------------------------------------------------------------------
# Phone set and pronunciations
# ------------------------------------------------------------------------------------------------
def mark_positions(pron: Sequence[str]) -> tuple[str, ...]:
    """Word-position-dependent phones as Kaldi: ``_B`` begin, ``_I`` inside, ``_E`` end, ``_S`` single.

    SIL (a word pronounced as silence, e.g. ``!SIL SIL`` in an extra lexicon) stays unmarked.
    """
    def mark(p: str, suffix: str) -> str:
        return p if p == SIL else f"{p}{suffix}"

    if len(pron) == 1:
        return (mark(pron[0], "_S"),)
    return tuple(
        mark(p, "_B" if i == 0 else "_E" if i == len(pron) - 1 else "_I") for i, p in enumerate(pron)
    )


def phone_inventory(base_phones: Iterable[str], position_dependent: bool) -> list[str]:
    """Non-silence phone symbols in phones.txt order (sorted base phones, positions B I E S)."""
    base = sorted(set(base_phones) - {SIL})
    if not position_dependent:
        return base
    return [f"{p}{s}" for p in base for s in POSITION_SUFFIXES]


def add_disambig(lexicon: Sequence[tuple[str, tuple[str, ...]]]) -> tuple[list[tuple[str, tuple[str, ...]]], int]:
    """Append ``#1``, ``#2`` ... to pronunciations that are homophones or prefixes of another.

    As Kaldi's ``add_lex_disambig.pl``: a pronunciation gets a disambiguation symbol when another
    word has the identical phone sequence or a sequence that starts with it. Returns the new
    lexicon and the largest ``k`` used (0 if none).
    """
    counts = Counter(pron for _, pron in lexicon)
    prefixes = {pron[:i] for _, pron in lexicon for i in range(1, len(pron))}
    next_k: dict[tuple[str, ...], int] = {}
    out: list[tuple[str, tuple[str, ...]]] = []
    max_k = 0
    for word, pron in lexicon:
        if counts[pron] > 1 or pron in prefixes:
            k = next_k.get(pron, 1)
            next_k[pron] = k + 1
            max_k = max(max_k, k)
            out.append((word, pron + (f"#{k}",)))
        else:
            out.append((word, pron))
    return out, max_k


# ------------------------------------------------------------------------------------------------
# Topology
# ------------------------------------------------------------------------------------------------
def _phone_entry(phone_ids: Sequence[int]) -> list[str]:
    lines = ["<TopologyEntry>", "<ForPhones>", " ".join(map(str, phone_ids)), "</ForPhones>"]
    for s in range(_PHONE_STATES):
        lines.append(f"<State> {s} <PdfClass> {s} <Transition> {s} 0.75 <Transition> {s + 1} 0.25 </State>")
    lines += [f"<State> {_PHONE_STATES} </State>", "</TopologyEntry>"]
    return lines


def _sil_entry(phone_ids: Sequence[int]) -> list[str]:
    """Kaldi's silence prototype: state 0 enters 0-3, states 1-3 are fully connected, state 4 exits."""
    n = _SIL_STATES
    lines = ["<TopologyEntry>", "<ForPhones>", " ".join(map(str, phone_ids)), "</ForPhones>"]
    p0 = 1.0 / (n - 1)
    lines.append("<State> 0 <PdfClass> 0 " + " ".join(f"<Transition> {d} {p0:g}" for d in range(n - 1)) + " </State>")
    for s in range(1, n - 1):
        lines.append(
            f"<State> {s} <PdfClass> {s} " + " ".join(f"<Transition> {d} {p0:g}" for d in range(1, n)) + " </State>"
        )
    lines.append(f"<State> {n - 1} <PdfClass> {n - 1} <Transition> {n - 1} 0.75 <Transition> {n} 0.25 </State>")
    lines += [f"<State> {n} </State>", "</TopologyEntry>"]
    return lines


def make_topo(nonsil_ids: Sequence[int], sil_ids: Sequence[int]) -> str:
    """Kaldi text topology: 3-state left-to-right for ``nonsil_ids``, 5-state for ``sil_ids``."""
    lines = ["<Topology>", *_phone_entry(nonsil_ids), *_sil_entry(sil_ids), "</Topology>"]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------
# Lexicon FST
# ------------------------------------------------------------------------------------------------
def make_lexicon_fst(
    lexicon: Sequence[tuple[str, tuple[str, ...]]],
    phones: Mapping[str, int],
    words: Mapping[str, int],
    sil_prob: float,
    disambig_loop: bool = False,
) -> kaldifst.StdVectorFst:
    """Phones -> words with optional silence between words (Kaldi's make_lexicon_fst with --sil-prob).

    States: 0 start, 1 loop (words start and end here; final), 2 silence. From start: to the loop
    state (cost -log(1-p)) or through SIL to it (cost -log p). Each pronunciation leaves the loop
    state with the word on its first arc and returns to the loop state (cost -log(1-p)) or to the
    silence state (cost -log p), which goes back to the loop state through SIL. With
    ``disambig_loop`` a ``#0:#0`` self-loop sits on the loop state (for L_disambig.fst).
    """
    if not 0.0 < sil_prob < 1.0:
        raise ValueError(f"lang.sil_prob must be in (0, 1), got {sil_prob}")
    sil_cost, no_sil_cost = -math.log(sil_prob), -math.log(1.0 - sil_prob)
    sil = phones[SIL]
    fst = kaldifst.StdVectorFst()
    start, loop, sil_state = fst.add_state(), fst.add_state(), fst.add_state()
    fst.start = start
    fst.add_arc(start, kaldifst.StdArc(0, 0, no_sil_cost, loop))
    fst.add_arc(start, kaldifst.StdArc(sil, 0, sil_cost, loop))
    fst.add_arc(sil_state, kaldifst.StdArc(sil, 0, 0.0, loop))
    for word, pron in lexicon:
        if not pron:
            raise ValueError(f"word {word!r} has an empty pronunciation")
        src = loop
        for i, p in enumerate(pron[:-1]):
            nxt = fst.add_state()
            fst.add_arc(src, kaldifst.StdArc(phones[p], words[word] if i == 0 else 0, 0.0, nxt))
            src = nxt
        olabel = words[word] if len(pron) == 1 else 0
        last = phones[pron[-1]]
        fst.add_arc(src, kaldifst.StdArc(last, olabel, no_sil_cost, loop))
        fst.add_arc(src, kaldifst.StdArc(last, olabel, sil_cost, sil_state))
    if disambig_loop:
        fst.add_arc(loop, kaldifst.StdArc(phones["#0"], words["#0"], 0.0, loop))
    fst.set_final(loop, 0.0)
    kaldifst.arcsort(fst, sort_type="olabel")
    return fst


# ------------------------------------------------------------------------------------------------
# Building and writing a lang directory
# ------------------------------------------------------------------------------------------------
def build_lexicon(
    words: Iterable[str], pronounce: Mapping[str, Sequence[Sequence[str]]], position_dependent: bool
) -> tuple[list[tuple[str, tuple[str, ...]]], list[str]]:
    """(word, phones) pairs for ``words`` in sorted order, and the words with no pronunciation."""
    lexicon: list[tuple[str, tuple[str, ...]]] = []
    missing: list[str] = []
    for w in sorted(set(words)):
        prons = pronounce.get(w)
        if not prons:
            missing.append(w)
            continue
        seen: set[tuple[str, ...]] = set()
        for pron in prons:
            base = tuple(strip_stress(p) for p in (pron.split() if isinstance(pron, str) else pron))
            marked = mark_positions(base) if position_dependent else base
            if marked and marked not in seen:
                seen.add(marked)
                lexicon.append((w, marked))
    return lexicon, missing


def write_lang(
    lang_dir: Path,
    lexicon: Sequence[tuple[str, tuple[str, ...]]],
    sil_prob: float,
    position_dependent: bool,
) -> Lang:
    """Write every file of a lang directory for ``lexicon`` (words already chosen) and read it back."""
    lang_dir = Path(lang_dir)
    base = {p.rsplit("_", 1)[0] if position_dependent else p for _, pron in lexicon for p in pron}
    nonsil = phone_inventory(base, position_dependent)
    lex_disambig, max_k = add_disambig(lexicon)
    phone_syms = [EPS, SIL, *nonsil, *[f"#{k}" for k in range(max_k + 1)]]
    phones = {p: i for i, p in enumerate(phone_syms)}
    word_list = sorted({w for w, _ in lexicon})
    word_syms = [EPS, *word_list, "#0", "<s>", "</s>"]
    words = {w: i for i, w in enumerate(word_syms)}

    d = LangDir(lang_dir)
    write_text(d.phones, "".join(f"{p} {i}\n" for p, i in phones.items()))
    write_text(d.words, "".join(f"{w} {i}\n" for w, i in words.items()))
    write_text(d.lexicon, "".join(f"{w} {' '.join(p)}\n" for w, p in lexicon))
    write_text(d.lexicon_disambig, "".join(f"{w} {' '.join(p)}\n" for w, p in lex_disambig))
    nonsil_ids = [phones[p] for p in nonsil]
    write_text(d.topo, make_topo(nonsil_ids, [phones[SIL]]))
    write_text(d.phone_list("silence.csl"), f"{phones[SIL]}\n")
    write_text(d.phone_list("nonsilence.csl"), ":".join(map(str, nonsil_ids)) + "\n")
    write_text(d.phone_list("disambig.int"), "".join(f"{phones[f'#{k}']}\n" for k in range(max_k + 1)))
    write_text(d.phone_list("optional_silence.txt"), f"{SIL}\n")
    for path, lex, loop in ((d.l_fst, lexicon, False), (d.l_disambig_fst, lex_disambig, True)):
        fst = make_lexicon_fst(lex, phones, words, sil_prob, disambig_loop=loop)
        with atomic_path(path) as tmp:
            fst.write(str(tmp))
    write_text(
        d.info,
        json.dumps({"sil_prob": sil_prob, "position_dependent_phones": position_dependent}) + "\n",
    )
    return load_lang(lang_dir)


def _read_table(path: Path) -> dict[str, int]:
    table: dict[str, int] = {}
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or not parts[1].isdigit():
                raise ValueError(f"{path}:{lineno}: expected 'symbol id', got {line.rstrip()!r}")
            table[parts[0]] = int(parts[1])
    return table


def _read_ids(path: Path, sep: str | None) -> tuple[int, ...]:
    text = path.read_text().strip()
    return tuple(int(x) for x in text.split(sep)) if text else ()


def load_lang(lang_dir: str | Path) -> Lang:
    """Read a lang directory written by :func:`write_lang` (or by Kaldi's prepare_lang.sh)."""
    lang_dir = Path(lang_dir)
    d = LangDir(lang_dir)
    for path in (d.phones, d.words, d.topo):
        if not path.exists():
            raise InputError(f"{path} is missing; run the lang stage (--stage lang)")
    lexicon: dict[str, list[tuple[str, ...]]] = {}
    lex_path = d.lexicon
    if lex_path.exists():
        for line in lex_path.read_text().splitlines():
            parts = line.split()
            if parts:
                lexicon.setdefault(parts[0], []).append(tuple(parts[1:]))
    info_path = d.info
    info = read_json(info_path) if info_path.exists() else {}
    return Lang(
        dir=lang_dir,
        phones=_read_table(d.phones),
        words=_read_table(d.words),
        lexicon=lexicon,
        silence_phones=_read_ids(d.phone_list("silence.csl"), ":"),
        nonsilence_phones=_read_ids(d.phone_list("nonsilence.csl"), ":"),
        disambig_phones=_read_ids(d.phone_list("disambig.int"), None),
        topo_text=d.topo.read_text(),
        sil_prob=float(info.get("sil_prob", 0.5)),
        position_dependent=bool(info.get("position_dependent_phones", False)),
    )


# ------------------------------------------------------------------------------------------------
# The stage
# ------------------------------------------------------------------------------------------------
def prepare_lang(
    lang_dir: Path,
    manifests: Sequence[Path],
    vocab: set[str],
    pronounce: Mapping[str, Sequence[Sequence[str]]],
    sil_prob: float,
    position_dependent: bool,
    oov_policy: str,
) -> dict[str, Any]:
    """Build and write the lang directory for the corpus words; returns the stage summary.

    Its words: the decoding vocabulary ``vocab`` (:func:`asr_kd.data.vocab.decoding_vocabulary`: the
    LM's words and the training transcripts') and, for the aligner alone (every split's frame
    labels), the words of every transcript in ``manifests``; a dev or test word outside ``vocab``
    is in the lexicon but never in the decoding graph (the graph stage's LM holds ``vocab`` only).
    Transcript words without a pronunciation are an error with ``oov_policy="error"`` (naming
    them) and are left out, counted, with ``"skip"``. With ``"g2p"`` every word without one, of
    the transcripts and of the vocabulary, is given espeak-ng's (:mod:`asr_kd.data.g2p`), listed in
    ``lexicon_g2p.txt``; a transcript word the G2P cannot pronounce is then the error. Otherwise
    vocabulary-only words without one are left out and counted (the LM's words are many more, and
    noisier, than the transcripts'). The pronunciations of ``pronounce`` (CMUdict and the user's
    lexicon) come first, so the G2P pronounces only the remainder.
    """
    from asr_kd.data.vocab import manifest_words

    transcript_words = manifest_words(manifests)
    all_words = transcript_words | set(vocab)
    lm_only = len(all_words - transcript_words)
    aligner_only = len(transcript_words - set(vocab))
    lexicon, missing = build_lexicon(all_words, pronounce, position_dependent)
    g2p_summary: dict[str, Any] = {}
    if oov_policy == "g2p":
        generated, g2p_summary = pronounce_oov(LangDir(lang_dir).lexicon_g2p, missing, transcript_words)
        lexicon, missing = build_lexicon(all_words, {**pronounce, **generated}, position_dependent)
    else:
        LangDir(lang_dir).lexicon_g2p.unlink(missing_ok=True)  # a list from an earlier g2p run would mislead
    missing_transcript = sorted(set(missing) & transcript_words)
    if missing_transcript and oov_policy in ("error", "g2p"):
        shown = ", ".join(missing_transcript[:20])
        raise ValueError(
            f"{len(missing_transcript)} transcript word(s) have no pronunciation"
            f"{' (espeak-ng gave none)' if oov_policy == 'g2p' else ''}: {shown}; "
            "add them to a lexicon file given with --set data.extra_lexicon=PATH, "
            "or use --set data.oov_policy=skip"
        )
    lang = write_lang(lang_dir, lexicon, sil_prob, position_dependent)
    log.info("lang: %d words, %d pronunciations, %d phones", len(lang.lexicon), len(lexicon),
             len(lang.nonsilence_phones))
    return {
        "num_words": len(lang.lexicon),
        "num_pronunciations": len(lexicon),
        "num_nonsilence_phones": len(lang.nonsilence_phones),
        "num_disambig_symbols": len(lang.disambig_phones),
        "decoding_vocabulary_words": len(set(vocab) & set(lang.lexicon)),
        "lm_only_words": lm_only,
        "aligner_only_words": aligner_only,
        "words_without_pronunciation": len(missing),
        "transcript_words_without_pronunciation": missing_transcript[:100],
        **g2p_summary,
        "position_dependent_phones": position_dependent,
        "sil_prob": sil_prob,
    }


def pronounce_oov(
    out: Path, missing: Sequence[str], transcript_words: set[str]
) -> tuple[dict[str, list[tuple[str, ...]]], dict[str, Any]]:
    """G2P pronunciations for the ``missing`` words, written to ``out`` (``WORD PH1 PH2 ...`` a
    line, the format of ``data.extra_lexicon``: edit it and pass it back to override); and their
    counts for the stage summary."""
    from asr_kd.data.g2p import VOICE, g2p

    generated = {w: [p] for w, p in g2p(missing).items()}
    with atomic_open(out, "w", encoding="utf-8") as f:
        f.write(f"# data.oov_policy=g2p: {len(generated)} word(s) missing from the lexicon, pronounced by "
                f"espeak-ng {VOICE}; to change one, pass an edited copy with --set data.extra_lexicon=PATH\n")
        f.writelines(f"{w} {' '.join(prons[0])}\n" for w, prons in sorted(generated.items()))
    in_transcripts = sorted(set(generated) & transcript_words)
    failed = sorted(set(missing) - set(generated))
    if generated:
        log.info("lang: G2P pronounced %d word(s) (%d of the transcripts), listed in %s", len(generated),
                 len(in_transcripts), out)
    return generated, {
        "g2p_words": len(generated),
        "g2p_transcript_words": len(in_transcripts),
        "g2p_lm_only_words": len(generated) - len(in_transcripts),
        "g2p_failed_words": failed[:100],
        "g2p_examples": [f"{w} {' '.join(generated[w][0])}" for w in in_transcripts[:20]],
    }
