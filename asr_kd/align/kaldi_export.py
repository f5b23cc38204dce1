"""The align stage's result as a Kaldi experiment directory, in the files Kaldi's tools read.

    python -m asr_kd.align.kaldi_export --exp-dir EXP OUT

writes, from ``EXP/align/`` and the lang its model goes with (``EXP/lang/``)::

    final.mdl        the final GMM-HMM in Kaldi's binary format (TransitionModel + AmDiagGmm)
    tree             its context-dependency tree (Kaldi binary; align/tree as it is)
    ali.N.gz         transition ids per frame: gzipped binary archives of int32 vectors, as
                     ``steps/align_si.sh`` writes them; one job per split (1 train, 2 dev, 3 test)
    num_jobs         how many ali.N.gz there are
    phones.txt       the phone symbols the model's phone ids refer to
    lang/            the lang directory, Kaldi's data/lang layout (phones.txt, words.txt, L.fst,
                     L_disambig.fst, topo, phones/{silence,nonsilence}.csl, phones/disambig.int, ...)
    mono/final.mdl mono/tree   with align.context=triphone: the monophone system it grew from
    export.json      where it came from, and the split and utterance count of each job

With Kaldi installed, e.g. ``ali-to-pdf OUT/final.mdl "ark:gunzip -c OUT/ali.1.gz|" ark,t:-`` or
``show-alignments OUT/phones.txt OUT/final.mdl "ark:gunzip -c OUT/ali.2.gz|"``. The recipe takes it
back with ``--set align.source=kaldi --set align.kaldi_ali_dir=OUT`` (same labels, same HCLG:
``tests/recipes/test_kaldi_roundtrip.py``). The features are not exported: Kaldi's own MFCC + deltas
with per-speaker CMN (``features.num_ceps`` cepstra) is what the GMM was trained on.
"""

from __future__ import annotations

import argparse
import gzip
import io
import shutil
import sys
from pathlib import Path
from typing import Any

import kaldiio
import numpy as np

from asr_kd.align.model import load_model, save_model_binary
from asr_kd.data.scp import load_scp
from asr_kd.fileio import atomic_open, atomic_path, write_json, write_text
from asr_kd.files import GMM_MODEL_FILE, GMM_TREE_FILE, SPLITS
from asr_kd.paths import MARKER, RunPaths
from asr_kd.errors import InputError

INFO_FILE = "export.json"


def write_ali_gz(path: Path, alignments: dict[str, np.ndarray]) -> None:
    """A gzipped binary Kaldi archive of int32 vectors (``utt \\0B\\4<n>`` then ``\\4<int32>`` per
    element, Kaldi's Int32VectorWriter), sorted by utterance, atomically; the same bytes every time."""
    buf = io.BytesIO()
    kaldiio.save_ark(buf, {u: np.asarray(alignments[u], dtype=np.int32) for u in sorted(alignments)})
    with atomic_open(path, "wb") as f, gzip.GzipFile(filename="", fileobj=f, mode="wb", mtime=0) as gz:
        gz.write(buf.getvalue())


def write_model_dir(src: Path, out: Path) -> dict[str, Any]:
    """``final.mdl`` (binary) and ``tree`` of the model in ``src`` into ``out``."""
    model = load_model(src)
    save_model_binary(model, out / GMM_MODEL_FILE)
    with atomic_path(out / GMM_TREE_FILE) as tmp:
        shutil.copyfile(src / GMM_TREE_FILE, tmp)
    return {"num_pdfs": model.num_pdfs, "num_gaussians": model.num_gauss,
            "context_width": int(model.ctx_dep.context_width)}


def copy_lang(src: Path, out: Path) -> None:
    """Every file of the lang directory ``src`` under ``out`` (replacing what was there)."""
    shutil.rmtree(out, ignore_errors=True)
    for f in sorted(src.rglob("*")):
        if f.is_file() and not f.name.startswith(".") and f.name != MARKER:
            with atomic_path(out / f.relative_to(src)) as tmp:
                shutil.copyfile(f, tmp)


def check_out_dir(out: Path) -> None:
    """Refuse a non-empty ``out`` that is not an earlier export (its files would be mixed with ours)."""
    if out.exists() and any(out.iterdir()) and not (out / INFO_FILE).exists():
        raise InputError(f"{out} is not empty and holds no {INFO_FILE} of an earlier export; choose a new directory")


def export_kaldi(exp_dir: Path, out: Path) -> dict[str, Any]:
    """Write the Kaldi experiment directory ``out`` from the run ``exp_dir`` (see the module docstring)."""
    paths = RunPaths(exp_dir)
    check_out_dir(out)
    missing = [p for p in (paths.final_mdl, paths.tree, *(paths.ali_scp(s) for s in SPLITS)) if not p.exists()]
    if missing:
        raise InputError(f"{missing[0]} is missing: run the align stage first (the built-in aligner, or a Kaldi "
                         "import of transition ids with final.mdl and tree)")
    out.mkdir(parents=True, exist_ok=True)
    info: dict[str, Any] = {"exp_dir": str(exp_dir.resolve()), "model": write_model_dir(paths.align, out), "jobs": {}}
    for job, split in enumerate(SPLITS, 1):
        alignments = {u: np.asarray(v) for u, v in load_scp(paths.ali_scp(split)).items()}
        write_ali_gz(out / f"ali.{job}.gz", alignments)
        info["jobs"][str(job)] = {"split": split, "utterances": len(alignments),
                                  "frames": int(sum(len(v) for v in alignments.values()))}
    for stale in out.glob("ali.*.gz"):  # from an earlier export with more jobs
        if stale.name.split(".")[1] not in info["jobs"]:
            stale.unlink()
    write_text(out / "num_jobs", f"{len(SPLITS)}\n")
    lang = paths.decode_lang
    copy_lang(lang, out / "lang")
    with atomic_path(out / "phones.txt") as tmp:
        shutil.copyfile(lang / "phones.txt", tmp)
    if paths.mono_mdl.exists() and paths.mono_tree.exists():
        info["mono"] = write_model_dir(paths.mono_dir, out / "mono")
    else:
        shutil.rmtree(out / "mono", ignore_errors=True)
    write_json(out / INFO_FILE, info)
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m asr_kd.align.kaldi_export",
        description="Write a run's alignments and GMM-HMM as a Kaldi experiment directory "
                    "(binary final.mdl, tree, ali.N.gz, num_jobs, phones.txt, lang/).")
    ap.add_argument("--exp-dir", required=True, type=Path, help="a run directory whose align stage is done")
    ap.add_argument("out", type=Path, help="the Kaldi experiment directory to write (new, or an earlier export)")
    args = ap.parse_args(argv)
    try:
        info = export_kaldi(args.exp_dir, args.out)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    model = info["model"]
    print(f"{args.out}: final.mdl ({model['num_pdfs']} pdfs, {model['num_gaussians']} Gaussians, context width "
          f"{model['context_width']}), tree, phones.txt, lang/, num_jobs")
    for job, j in info["jobs"].items():
        print(f"  ali.{job}.gz  {j['split']}: {j['utterances']} utterances, {j['frames']} frames")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
