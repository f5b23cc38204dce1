"""The align stage's work with ``align.source=kaldi``: Kaldi's alignments read into the run
(:mod:`asr_kd.align.kaldi_import`), and its model, tree and the lang they decode with
(:mod:`asr_kd.align.kaldi_lang`) copied into ``align/``."""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path
from typing import Any

from asr_kd.align.kaldi_import import AlignOutputs, context_of, feature_lengths, find_inputs, import_alignments
from asr_kd.config import RecipeConfig
from asr_kd.errors import InputError
from asr_kd.fileio import atomic_path
from asr_kd.files import GMM_MODEL_FILE, GMM_TREE_FILE, SPLITS
from asr_kd.paths import RunPaths

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------
# The model, the tree and the lang, for the graph and decode stages
# ------------------------------------------------------------------------------------------------
def import_model(src: Path, kaldi_lang_dir: str, paths: RunPaths) -> dict[str, Any]:
    """Copy Kaldi's ``final.mdl`` and ``tree`` (beside the alignments) into ``align/`` as they are,
    after checking that they load together, and choose the lang they decode with
    (:func:`asr_kd.align.kaldi_lang.resolve_lang`). Without both files the run has labels but no
    HMM: the summary says so and the graph stage will stop, naming what is missing."""
    from asr_kd.align.kaldi_format import read_mdl
    from asr_kd.align.kaldi_lang import resolve_lang
    from asr_kd.align.model import from_mdl, read_tree

    exp = src if src.is_dir() else src.parent
    mdl_path, tree_path = exp / GMM_MODEL_FILE, exp / GMM_TREE_FILE
    shutil.rmtree(paths.mono_dir, ignore_errors=True)  # the built-in aligner's monophone system, if any
    if not (mdl_path.exists() and tree_path.exists()):
        for stale in (paths.final_mdl, paths.tree):
            stale.unlink(missing_ok=True)
        shutil.rmtree(paths.align_lang, ignore_errors=True)
        absent = " and ".join(p.name for p in (mdl_path, tree_path) if not p.exists())
        log.warning("no %s in %s: labels imported, but the graph and decode stages need Kaldi's final.mdl and "
                    "tree there", absent, exp)
        return {"decodable": False, "missing": absent}
    mdl = read_mdl(mdl_path)
    try:
        model = from_mdl(mdl, read_tree(tree_path), mdl_path)
    except ValueError as e:
        raise InputError(str(e)) from None
    lang = resolve_lang(paths.lang, paths.align_lang, mdl, kaldi_lang_dir, exp, mdl_path, paths.manifest("train"))
    lang["dir"] = str(Path(lang["dir"]).relative_to(paths.root))  # relative: a run directory can be moved
    for s_, d in ((mdl_path, paths.final_mdl), (tree_path, paths.tree)):
        with atomic_path(d) as tmp:
            shutil.copyfile(s_, tmp)
    return {"decodable": True, "final_mdl": str(mdl_path), "binary": mdl.binary, "num_pdfs": model.num_pdfs,
            "num_gaussians": model.num_gauss, "feature_dim": model.dim,
            "num_transition_ids": int(model.trans_model.num_transition_ids), "lang": lang}


def import_kaldi_alignments(cfg: RecipeConfig, paths: RunPaths) -> dict[str, Any]:
    """The align stage with ``align.source=kaldi``: Kaldi alignments -> pdf.scp (+ ali.scp) per split."""
    if not cfg.align.kaldi_ali_dir:
        raise InputError("align.source=kaldi needs --set align.kaldi_ali_dir=PATH (a Kaldi ali dir or pdf file)")
    src = Path(cfg.align.kaldi_ali_dir)
    mode, files, mdl = find_inputs(src)
    model = import_model(src, cfg.align.kaldi_lang_dir, paths)
    lengths = {split: feature_lengths(paths.fbank_scp(split)) for split in SPLITS}
    outputs = {split: AlignOutputs(paths.pdf_scp(split), paths.ali_scp(split), paths.align_failed(split))
               for split in SPLITS}
    splits, num_pdfs = import_alignments(files, mdl, lengths, outputs)
    train = splits["train"]
    if train["utterances"] and train["failed"] / train["utterances"] > cfg.align.max_fail_fraction:
        needed = math.ceil(train["failed"] / train["utterances"] * 1000) / 1000
        raise InputError(
            f"{train['failed']} of {train['utterances']} train utterances have no usable Kaldi alignment "
            f"(more than align.max_fail_fraction={cfg.align.max_fail_fraction:g}); their ids and reasons are in "
            f"{paths.align_failed('train')}. Fix those alignments, or accept the loss with "
            f"--set align.max_fail_fraction={needed:g}"
        )
    for split in ("dev", "test"):
        if splits[split]["aligned"] == 0:
            log.warning("no Kaldi alignments for the %s split: its frame accuracy cannot be measured", split)
    return {
        "source": "kaldi",
        "kaldi_input": str(src),
        "input_kind": "transition ids + final.mdl" if mode == "tid" else "pdf ids",
        "context": context_of(src),
        "num_pdfs": num_pdfs,
        "success_rate": train["success_rate"],
        "success_rate_per_split": {s: v["success_rate"] for s, v in splits.items()},
        "utterances_per_split": {s: v["utterances"] for s, v in splits.items()},
        "length_mismatches": sum(v["length_mismatches"] for v in splits.values()),
        "model": model,
        "splits": splits,
    }
