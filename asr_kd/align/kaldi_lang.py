"""The lang an imported Kaldi model decodes with: Kaldi's own, or ours checked against its phone ids.

With ``align.source=kaldi`` the align stage takes Kaldi's ``final.mdl`` and ``tree`` into
``align/``; their phone ids are those of the Kaldi experiment's ``phones.txt``. The graph stage
needs a lexicon FST (``L_disambig.fst``) over the same ids, and one of these gives it:

1. ``align.kaldi_lang_dir`` (Kaldi's ``data/lang``, or any directory with ``phones.txt``,
   ``words.txt`` and ``L_disambig.fst``; unset, the experiment directory itself when it holds
   those three): copied to ``align/lang/``. Its ``phones.txt`` must equal
   the experiment's, disambiguation symbols aside (what Kaldi's
   ``utils/lang/check_phones_compatible.sh`` checks); Kaldi's ``phones/align_lexicon.txt`` becomes
   ``lexicon.txt`` (for word times in ``transcribe``).
2. Unset: our ``lang/`` (the lang stage's), checked against the experiment's ``phones.txt``:
   the same ids are used as they are; the same symbols under other ids are renumbered into
   ``align/lang/`` (phones.txt, L.fst, L_disambig.fst, the phone lists); a phone of ours that
   Kaldi's table lacks is a :class:`InputError` that names it and points at option 1.

Either way every phone the lexicon uses must have an HMM in the model's topology, and the words of
a Kaldi ``words.txt`` are checked against the training transcripts (none in common: an error;
the share of transcript words it lacks is reported). Later stages read the result through
:attr:`asr_kd.paths.RunPaths.decode_lang`.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import kaldifst

from asr_kd.align.kaldi_format import MdlFile
from asr_kd.data.lang import EPS, load_lang
from asr_kd.data.manifest import iter_manifest
from asr_kd.fileio import atomic_path, write_text
from asr_kd.files import LangDir
from asr_kd.errors import InputError

log = logging.getLogger(__name__)

# Files of a Kaldi data/lang copied as they are when present (L_disambig.fst, phones.txt and words.txt must be).
_OPTIONAL = ("L.fst", "phones/silence.csl", "phones/nonsilence.csl", "phones/optional_silence.txt")


def read_symbols(path: Path) -> dict[str, int]:
    """symbol -> id of a Kaldi symbol table (phones.txt, words.txt); InputError naming a bad line."""
    table: dict[str, int] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise InputError(f"{path}:{lineno}: expected 'symbol id', got {line[:80]!r}")
        table[parts[0]] = int(parts[1])
    return table


def is_disambig(symbol: str) -> bool:
    return symbol.startswith("#")


def real_phones(table: dict[str, int]) -> dict[str, int]:
    """The phones of a phones.txt without <eps> and the #k disambiguation symbols."""
    return {p: i for p, i in table.items() if p != EPS and not is_disambig(p)}


def _table_text(table: dict[str, int]) -> str:
    return "".join(f"{s} {i}\n" for s, i in sorted(table.items(), key=lambda kv: kv[1]))


def compare_phone_tables(ours: dict[str, int], theirs: dict[str, int], ours_name: Path, theirs_name: Path) -> None:
    """InputError unless the two phones.txt agree on every phone (disambiguation symbols aside)."""
    a, b = real_phones(ours), real_phones(theirs)
    if a == b:
        return
    diff = [f"{p}: {a.get(p)} vs {b.get(p)}" for p in sorted(set(a) | set(b), key=lambda p: (a.get(p, 1 << 30), p))
            if a.get(p) != b.get(p)]
    raise InputError(f"{ours_name} and {theirs_name} differ on {len(diff)} phone(s) ({', '.join(diff[:5])}); "
                     "the lang directory must be the one the Kaldi model was trained with")


def check_model_phones(lang_phones: dict[str, int], mdl: MdlFile, lang_name: Path, mdl_name: Path) -> None:
    """InputError naming the lexicon's phones the model has no HMM for."""
    missing = sorted((i, p) for p, i in real_phones(lang_phones).items() if i not in mdl.phone2entry)
    if missing:
        shown = ", ".join(f"{p} ({i})" for i, p in missing[:10])
        raise InputError(f"{len(missing)} phone(s) of {lang_name} have no HMM in {mdl_name}: {shown}; "
                         "the lang directory and the model do not belong together")


# ------------------------------------------------------------------------------------------------
# Kaldi's lang directory
# ------------------------------------------------------------------------------------------------
def copy_kaldi_lang(src: Path, dst: Path, mdl: MdlFile, exp_phones: Path | None, mdl_name: Path) -> dict[str, Any]:
    """Copy Kaldi's lang directory ``src`` into ``dst`` (our LangDir layout) after checking it."""
    theirs, out = LangDir(src), LangDir(dst)
    for required in (theirs.phones, theirs.words, theirs.l_disambig_fst):
        if not required.exists():
            raise InputError(f"align.kaldi_lang_dir={src} has no {required.name}; point it at Kaldi's data/lang "
                             "(or a directory with phones.txt, words.txt and L_disambig.fst)")
    phones = read_symbols(theirs.phones)
    if exp_phones is not None:
        compare_phone_tables(phones, read_symbols(exp_phones), theirs.phones, exp_phones)
    check_model_phones(phones, mdl, theirs.phones, mdl_name)
    try:
        kaldifst.StdVectorFst.read(str(theirs.l_disambig_fst))
    except Exception as e:  # noqa: BLE001 - the reader raises plain RuntimeError/Exception
        raise InputError(f"{theirs.l_disambig_fst} cannot be read as an OpenFst vector FST ({e})") from None
    shutil.rmtree(dst, ignore_errors=True)
    for name in ("phones.txt", "words.txt", "L_disambig.fst", *_OPTIONAL):
        if (src / name).exists():
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(dst / name) as tmp:
                shutil.copyfile(src / name, tmp)
    disambig = src / "phones" / "disambig.int"
    ids = (disambig.read_text() if disambig.exists()
           else "".join(f"{i}\n" for p, i in sorted(phones.items(), key=lambda kv: kv[1]) if is_disambig(p)))
    write_text(out.phone_list("disambig.int"), ids)
    for name in ("silence.csl", "nonsilence.csl"):
        if not out.phone_list(name).exists():
            log.warning("%s has no phones/%s; written empty", src, name)
            write_text(out.phone_list(name), "\n")
    write_text(out.topo, mdl.topology_text())
    lexicon = _kaldi_lexicon(src)
    if lexicon is not None:
        write_text(out.lexicon, lexicon)
    else:
        log.warning("%s has neither phones/align_lexicon.txt nor lexicon.txt: lexicon.txt written empty, so "
                    "transcribe gives no word times", src)
        write_text(out.lexicon, "")
    return {"source": f"Kaldi lang {src}", "phones_checked_against": str(exp_phones or mdl_name)}


def _kaldi_lexicon(src: Path) -> str | None:
    """Our lexicon.txt ('WORD PH1 PH2 ...') from Kaldi's phones/align_lexicon.txt ('WORD WORD PH1 ...')."""
    align_lex = src / "phones" / "align_lexicon.txt"
    if align_lex.exists():
        lines = (line.split() for line in align_lex.read_text(encoding="utf-8").splitlines())
        return "".join(f"{p[0]} {' '.join(p[2:])}\n" for p in lines if len(p) >= 2)
    plain = src / "lexicon.txt"
    return plain.read_text(encoding="utf-8") if plain.exists() else None


# ------------------------------------------------------------------------------------------------
# Our lang directory against Kaldi's phone ids
# ------------------------------------------------------------------------------------------------
def phone_id_map(ours: dict[str, int], theirs: dict[str, int], ours_name: Path, theirs_name: Path) -> dict[int, int]:
    """Our phone id -> Kaldi's, by symbol; our #k symbols get ids after Kaldi's largest phone id.

    InputError naming the phones of ours that Kaldi's table lacks.
    """
    a, b = real_phones(ours), real_phones(theirs)
    missing = sorted(set(a) - set(b), key=a.__getitem__)
    if missing:
        raise InputError(
            f"{len(missing)} phone(s) of {ours_name} are not in {theirs_name}: {', '.join(missing[:10])}; our lexicon "
            "cannot be used with the Kaldi model. Set --set align.kaldi_lang_dir=PATH to Kaldi's data/lang "
            "(the lang the model was trained with)")
    mapping = {ours[EPS]: 0} if EPS in ours else {}
    mapping.update({i: b[p] for p, i in a.items()})
    next_id = max(b.values()) + 1
    for p, i in sorted(ours.items(), key=lambda kv: kv[1]):
        if is_disambig(p):
            mapping[i] = next_id
            next_id += 1
    return mapping


def relabel_inputs(fst: kaldifst.StdVectorFst, mapping: dict[int, int]) -> kaldifst.StdVectorFst:
    """A copy of ``fst`` with every input label mapped (0 stays 0); same states, arcs and weights."""
    out = kaldifst.StdVectorFst()
    for _ in kaldifst.StateIterator(fst):
        out.add_state()
    out.start = fst.start
    for s in kaldifst.StateIterator(fst):
        for a in kaldifst.ArcIterator(fst, s):
            ilabel = mapping[a.ilabel] if a.ilabel else 0
            out.add_arc(s, kaldifst.StdArc(ilabel, a.olabel, a.weight.value, a.nextstate))
        final = fst.final(s)
        if final != kaldifst.TropicalWeight.zero:
            out.set_final(s, final.value)
    kaldifst.arcsort(out, sort_type="olabel")
    return out


def renumber_lang(src: Path, dst: Path, mapping: dict[int, int], mdl: MdlFile) -> None:
    """Write ``src`` (our lang) into ``dst`` with phone ids mapped by ``mapping``."""
    lang = load_lang(src)
    theirs, out = LangDir(src), LangDir(dst)
    shutil.rmtree(dst, ignore_errors=True)
    write_text(out.phones, _table_text({p: mapping[i] for p, i in lang.phones.items()}))
    for fst_path in (theirs.l_fst, theirs.l_disambig_fst):
        fst = relabel_inputs(kaldifst.StdVectorFst.read(str(fst_path)), mapping)
        with atomic_path(dst / fst_path.name) as tmp:
            fst.write(str(tmp))
    for name, ids, sep in (("silence.csl", lang.silence_phones, ":"), ("nonsilence.csl", lang.nonsilence_phones, ":"),
                           ("disambig.int", lang.disambig_phones, "\n")):
        write_text(out.phone_list(name), sep.join(str(mapping[i]) for i in ids) + "\n")
    for name in ("words.txt", "lexicon.txt", "lexicon_disambig.txt", "lang_info.json", "phones/optional_silence.txt"):
        if (src / name).exists():
            write_text(dst / name, (src / name).read_text(encoding="utf-8"))
    write_text(out.topo, mdl.topology_text())


def use_our_lang(lang: Path, out: Path, mdl: MdlFile, exp_phones: Path | None, mdl_name: Path) -> dict[str, Any]:
    """Our lang (``lang``) for the imported model: as it is, or renumbered to Kaldi's ids into ``out``."""
    ours = LangDir(lang)
    if not ours.phones.exists():
        raise InputError(f"{ours.phones} is missing; run the lang stage (--stage lang)")
    our_phones = read_symbols(ours.phones)
    if exp_phones is None:
        try:
            check_model_phones(our_phones, mdl, ours.phones, mdl_name)
        except InputError as e:
            raise InputError(f"{e}. Kaldi's phones.txt is not beside {mdl_name} to map them by name: copy it there "
                             "or set --set align.kaldi_lang_dir=PATH to Kaldi's data/lang") from None
        log.warning("no phones.txt beside %s: our lang/ is used with its phone ids unchecked by name", mdl_name)
        return {"source": "ours (lang/)", "phones_checked_against": None}
    kaldi_phones = read_symbols(exp_phones)
    mapping = phone_id_map(our_phones, kaldi_phones, ours.phones, exp_phones)
    if all(mapping[i] == i for p, i in our_phones.items() if not is_disambig(p)):
        check_model_phones(our_phones, mdl, ours.phones, mdl_name)
        return {"source": "ours (lang/)", "phones_checked_against": str(exp_phones)}
    renumber_lang(lang, out, mapping, mdl)
    check_model_phones(read_symbols(LangDir(out).phones), mdl, out / "phones.txt", mdl_name)
    log.info("our lang/ renumbered to the phone ids of %s into %s", exp_phones, out)
    return {"source": f"ours (lang/), renumbered to the phone ids of {exp_phones}",
            "phones_checked_against": str(exp_phones)}


# ------------------------------------------------------------------------------------------------
# Words
# ------------------------------------------------------------------------------------------------
def transcript_coverage(words_txt: Path, manifest: Path) -> dict[str, Any]:
    """How many training-transcript words ``words_txt`` has; InputError when it has none of them."""
    vocab = set(read_symbols(words_txt))
    tokens = missing = 0
    unknown: dict[str, int] = {}
    for utt in iter_manifest(manifest):
        for w in utt.words:
            tokens += 1
            if w not in vocab:
                missing += 1
                unknown[w] = unknown.get(w, 0) + 1
    if tokens and missing == tokens:
        raise InputError(f"none of the {tokens} words of the training transcripts ({manifest}) is in {words_txt} "
                         f"(e.g. {next(iter(unknown))!r}); do the transcripts and Kaldi's words.txt differ in case "
                         "or normalisation?")
    top = sorted(unknown, key=lambda w: (-unknown[w], w))[:20]
    return {"transcript_words": tokens, "transcript_oov_rate": missing / tokens if tokens else 0.0,
            "transcript_oov_examples": top}


def resolve_lang(lang: Path, out: Path, mdl: MdlFile, kaldi_lang_dir: str, exp_dir: Path, mdl_name: Path,
                 train_manifest: Path | None = None) -> dict[str, Any]:
    """The lang the imported model decodes with (see the module docstring); its summary.

    ``lang``: our lang directory; ``out``: where Kaldi's lang, or ours renumbered, is written (emptied
    first); ``train_manifest``: the training transcripts, checked against the chosen ``words.txt``.
    The summary's ``dir`` is the chosen directory: ``out`` when it was written, else ``lang``."""
    exp_phones = exp_dir / "phones.txt"
    exp_phones = exp_phones if exp_phones.exists() else None
    shutil.rmtree(out, ignore_errors=True)
    if not kaldi_lang_dir and all((exp_dir / name).exists() for name in ("L_disambig.fst", "words.txt", "phones.txt")):
        kaldi_lang_dir = str(exp_dir)  # the experiment carries its lang files itself
        log.info("%s holds phones.txt, words.txt and L_disambig.fst: decoding with that lang", exp_dir)
    if kaldi_lang_dir:
        src = Path(kaldi_lang_dir)
        if not src.is_dir():
            raise InputError(f"align.kaldi_lang_dir={src} is not a directory; point it at Kaldi's data/lang")
        summary = copy_kaldi_lang(src, out, mdl, exp_phones, mdl_name)
    else:
        summary = use_our_lang(lang, out, mdl, exp_phones, mdl_name)
    lang_dir = out if LangDir(out).phones.exists() else lang
    summary["dir"] = str(lang_dir)
    if train_manifest is not None and train_manifest.exists():
        summary.update(transcript_coverage(LangDir(lang_dir).words, train_manifest))
    return summary
