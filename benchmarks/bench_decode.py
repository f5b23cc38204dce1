"""Decoding benchmark: HCLG build time and search real-time factor on CPU, for a run directory;
and the decode stage's own path, its cost in seconds per hour of audio, forward and search apart.

    python benchmarks/bench_decode.py --exp-dir exp/smoke [--beams 8,13] [--max-utts 100]
    python benchmarks/bench_decode.py --exp-dir exp/100h --stage-path --system ensemble --split dev \
        --max-utts 500 --jobs 16 [--device cuda]

``--stage-path`` times what the decode stage does for one system on one split
(:func:`asr_kd.stages._decode.run_split`): the network's batched forward on ``--device`` (default:
the stage's choice, CUDA when there is a GPU) in the stage's precision, and the search of every
scale of ``decode.acoustic_scales`` (``--scales`` to change) by one pool of ``--jobs`` processes,
the scale applied in the workers. Printed, per hour of audio: forward seconds, search seconds of
one process per scale (the sum over utterances), and the wall seconds of the whole path (the
search by ``--jobs`` processes overlapping the next chunk's forward, as in the stage).

``--extra-vocab N`` (or ``all``) measures how the search grows with the decoding vocabulary: the
run's lang (lexicon, L.fst with its disambiguation symbols, words.txt) and LM are rebuilt in
``--work-dir`` (default: a temporary directory) with N more CMUdict words (a draw of
``--extra-vocab-seed`` from the CMUdict words of letters and apostrophes outside the run's
vocabulary whose phones the run's model has; ``all``: every one), each a unigram of the LM reached from its back-off state
(``--extra-vocab-lm unigram``: the LM estimated as the graph stage does, the words added to its
vocabulary, which gives them the uniform share of the unigram level; ``sentence``: each word
also added to the LM text as a one-word sentence); then the HCLG is built (states, arcs, build
seconds, peak RSS) and teacher 0 searched on it as below. ``--build-only`` stops after the build;
a later run with the same ``--work-dir`` reuses the HCLG (the graph's cache) and times the search.

    python benchmarks/bench_decode.py --exp-dir EXP --extra-vocab all --work-dir /tmp/v130k --build-only
    python benchmarks/bench_decode.py --exp-dir EXP --extra-vocab all --work-dir /tmp/v130k \
        --beams 8,13 --max-active 1000,7000

Needs a run that finished the align and shards stages (the graph is rebuilt in a temporary
directory, so the run's own graph is not touched). The acoustic scores come from the run's
teacher 0 when its model file exists (the hybrid DNN path: forward pass + search, timed apart),
else from the GMM of the align stage; an "oracle" row decodes confident posteriors made from the
test alignments (the search cost of a good model, and a check of the graph). Real-time factor = processing seconds / audio seconds
(10 ms frames); below 1 is faster than real time. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import re
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from asr_kd.align.model import load_model
from asr_kd.config import from_dict
from asr_kd.data.lang import load_lang
from asr_kd.decoding.graph import GraphInputs, make_graph
from asr_kd.decoding.scoring import score
from asr_kd.decoding.search import SearchConfig, hybrid_scores, read_hclg_decoder
from asr_kd.stages._decode import read_split, train_log_priors
from asr_kd.fileio import read_json
from asr_kd.paths import RunPaths, TrainRunDir


def oracle_log_posteriors(labels: np.ndarray, num_pdfs: int, peak: float = 0.9) -> np.ndarray:
    """(T, N) log-posteriors of a confident model that is always right: ``peak`` on the aligned state."""
    post = np.full((len(labels), num_pdfs), (1 - peak) / (num_pdfs - 1), dtype=np.float32)  # (T, N)
    post[np.arange(len(labels)), labels] = peak
    return np.log(post)


def build_graph(paths: RunPaths, self_loop_scale: float, out: Path, lang_dir: Path | None = None,
                arpa: Path | None = None, drop_words: set[str] | None = None) -> tuple[float, dict]:
    """The HCLG of the run's lang and LM (or of ``lang_dir`` and ``arpa``) under ``out``: build seconds
    and :func:`make_graph`'s info."""
    lang = load_lang(lang_dir or paths.lang)
    model = load_model(paths.align)
    inputs = GraphInputs(lang.read_l_fst(disambig=True), lang.disambig_phones, lang.words_txt_path,
                         model.trans_model, model.ctx_dep, self_loop_scale=self_loop_scale)
    t0 = time.perf_counter()
    info = make_graph(inputs, arpa or paths.lm_arpa, out, [lang.l_disambig_fst_path, paths.tree, paths.final_mdl],
                      drop_words=drop_words)
    return time.perf_counter() - t0, info


CMUDICT_WORD = re.compile(r"[A-Z']+")  # LibriSpeech's word alphabet (CMUdict's "A.", "AD-HOC", "#SHARP-SIGN" left out)


def peak_rss_gib() -> float:
    """This process's peak resident set size so far (``ru_maxrss``, KiB on Linux), in GiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def extra_vocab_graph(paths: RunPaths, cfg, extra: int, seed: int, lm_mode: str,
                      work: Path) -> tuple[list[tuple[str, str]], Path]:
    """The run's lang and LM rebuilt under ``work`` with ``extra`` more CMUdict words (-1: every one),
    and its HCLG (``work/graph``); the rows to print and the graph directory. The run is only read.

    As the lang stage: the decoding vocabulary of :func:`decoding_vocabulary` plus the extra words,
    pronounced by CMUdict (``data.extra_lexicon`` over it, and the run's ``lang/lexicon_g2p.txt``
    for the words espeak-ng pronounced there), :func:`prepare_lang` with the run's settings. As the
    graph stage: the Kneser-Ney LM of the run's ``graph/lm-train-text.txt`` over the vocabulary
    (:func:`asr_kd.decoding.lm.build_arpa`; with ``decode.arpa``, its copy with the extra words as
    unigrams), the words outside the LM dropped from the graph's words.txt, :func:`make_graph`."""
    import kaldifst

    from asr_kd.data.lang import prepare_lang
    from asr_kd.data.lexicon import cmudict_lexicon, load_lexicon, read_lexicon_file
    from asr_kd.data.manifest import read_manifest
    from asr_kd.data.vocab import decoding_vocabulary, manifest_words, oov_counts
    from asr_kd.decoding import lm
    from asr_kd.decoding.graph import LANG_SYMBOLS
    from asr_kd.files import GraphDir, LangDir
    from asr_kd.paths import SPLITS
    from asr_kd.runner import marker_summary
    from asr_kd.stages._graph import words_outside_graph

    if paths.decode_lang != paths.lang:
        raise SystemExit(f"{paths.root}'s model goes with an imported Kaldi lang ({paths.decode_lang}): "
                         "--extra-vocab rebuilds the lang stage's own lang only")
    t0 = time.perf_counter()
    lm_text = marker_summary(paths, "prepare").get("lm_text") or None
    vocab, _ = decoding_vocabulary([paths.manifest("train")], lm_text, cfg.decode.arpa or None, cfg.data.lm_vocab_size)
    pronounce = load_lexicon(cfg.data.extra_lexicon or None)
    g2p_file = LangDir(paths.lang).lexicon_g2p
    if g2p_file.exists():  # the run's espeak-ng pronunciations: the same lexicon without running the G2P again
        for w, prons in read_lexicon_file(g2p_file).items():
            pronounce.setdefault(w, prons)
    # words the run's model can pronounce: its tree and HMMs cover the phones its own lexicon used
    run_phones = {p.split("_")[0] for p in load_lang(paths.lang).phones}
    candidates = sorted(w for w, prons in cmudict_lexicon().items() if CMUDICT_WORD.fullmatch(w) and w not in vocab
                        and all(set(pron) <= run_phones for pron in prons))
    if extra < 0 or extra >= len(candidates):
        added = set(candidates)
    else:
        added = set(random.Random(seed).sample(candidates, extra))
    lang_dir, graph_dir = work / "lang", work / "graph"
    lang_summary = prepare_lang(lang_dir, [paths.manifest(split) for split in SPLITS], vocab | added, pronounce,
                                cfg.lang.sil_prob, cfg.lang.position_dependent_phones, cfg.data.oov_policy)
    lang = load_lang(lang_dir)
    lang_words = {w for w in lang.words if w not in LANG_SYMBOLS}
    in_graph = (vocab | added) & lang_words
    arpa = work / "lm.arpa"
    if cfg.decode.arpa:
        train_words = manifest_words([paths.manifest("train")])
        lm_summary = lm.copy_arpa_adding_unigrams(cfg.decode.arpa, arpa, (train_words & vocab) | added)
    else:
        text = paths.lm_train_text
        if not text.exists():
            raise SystemExit(f"{text} is missing: run the graph stage first (--stop-stage graph)")
        if lm_mode == "sentence":
            text = work / "lm-train-text.txt"
            with open(paths.lm_train_text, encoding="utf-8") as src, open(text, "w", encoding="utf-8") as f:
                f.write(src.read().rstrip("\n") + "\n")
                f.writelines(f"{w}\n" for w in sorted(added))
        lm_summary = lm.build_arpa(text, arpa, order=cfg.decode.lm_order, vocab=in_graph)
    lang_lm_s = time.perf_counter() - t0
    build_s, info = build_graph(paths, cfg.decode.self_loop_scale, graph_dir, lang_dir, arpa,
                                words_outside_graph(lang_words, in_graph, arpa))
    stats_file = work / "bench_build.json"
    if info.get("cached") and stats_file.exists():
        build = json.loads(stats_file.read_text())
        build["note"] = " (from the run that built it; this run reused its HCLG)"
    else:
        build = {"build_s": build_s, "peak_rss_gib": peak_rss_gib(), "note": ""}
        if info.get("cached"):
            build["note"] = " (this run reused an HCLG of unknown build; the figures are the reuse's)"
        hclg = kaldifst.StdVectorFst.read(str(GraphDir(graph_dir).hclg))
        build["hclg_arcs"] = sum(hclg.num_arcs(s) for s in range(hclg.num_states))
        del hclg
        stats_file.write_text(json.dumps(build) + "\n")
    test_oov = oov_counts([u.words for u in read_manifest(paths.manifest("test"))], in_graph)
    sizes = ", ".join(f"{k} {info[k]['states']:,}" for k in ("G", "LG", "CLG"))
    note = build["note"]
    ngrams = lm_summary.get("ngrams")
    return [
        ("decoding vocabulary (words in G)", f"{len(in_graph):,} ({len(vocab):,} of the run + {len(added):,} "
         f"CMUdict words, seed {seed}, LM mode {lm_mode}; of {len(candidates):,} candidates)"),
        ("lexicon words / pronunciations / disambiguation symbols",
         f"{lang_summary['num_words']:,} / {lang_summary['num_pronunciations']:,} / "
         f"{lang_summary['num_disambig_symbols']}"),
        ("LM n-grams", " / ".join(f"{n:,}" for n in ngrams) if ngrams else str(lm_summary)),
        ("test OOV tokens", f"{test_oov['oov_tokens']} of {test_oov['tokens']}"),
        ("lang + LM build (s)", f"{lang_lm_s:.1f}"),
        ("states", sizes),
        ("HCLG states / arcs", f"{info['HCLG']['states']:,} / {build['hclg_arcs']:,}"),
        ("HCLG build (s)" + note, f"{build['build_s']:.1f}"),
        ("peak RSS after the build (GiB, ru_maxrss)" + note, f"{build['peak_rss_gib']:.2f}"),
    ], graph_dir


def stage_path(paths: RunPaths, cfg, system_name: str, split: str, max_utts: int, jobs: int, device: str,
               scales: list[float]) -> list[tuple[str, str]]:
    """The decode stage's path for one system and split, timed: forward and search apart."""
    from asr_kd.decoding.pool import SearchPool
    from asr_kd.stages._decode import Search, discover_systems, dnn_chunks, forward_device, posterior_fn, run_split

    known = {s.name: s for s in discover_systems(cfg, paths)}
    if system_name not in known:
        raise SystemExit(f"no system {system_name!r} in {paths.root} (it has {', '.join(known)})")
    model = load_model(paths.align)
    decoder = read_hclg_decoder(paths.graph, model.trans_model,
                                SearchConfig.of(cfg.decode))
    prior = train_log_priors(paths, model.num_pdfs)
    data = read_split(paths, split, max_utts=max_utts)
    hours = sum(len(f) for f in data.feats.values()) * 0.01 / 3600
    device = device or forward_device(cfg)
    fn, _, precision = posterior_fn(known[system_name], cfg, device)
    fn([data.feats[data.utts[0]]])  # warm-up (CUDA context, kernels) outside the timing
    with SearchPool({"dnn": decoder.decode_log_likelihoods}, jobs) as pool:
        t0 = time.perf_counter()
        res = run_split(system_name, Search(pool, "dnn", cfg.decode.chunk_utts), data,
                        dnn_chunks(fn, data, prior), scales)
        wall = time.perf_counter() - t0
    best = min(scales, key=lambda s: score(data.refs, {h.utt: h.words for h in res.hyps[s]})[0].wer)
    wer = score(data.refs, {h.utt: h.words for h in res.hyps[best]})[0].wer
    return [(f"stage path: {system_name} on {split}", f"{len(data.utts)} utterances, {3600 * hours:.0f} s of audio, "
             f"scales {', '.join(f'{s:g}' for s in scales)} (best {best:g}: WER {100 * wer:.1f}%)"),
            (f"forward s / audio hour ({device}, {precision})", f"{res.forward_s / hours:.1f}"),
            ("search s / audio hour per scale, one process", f"{res.search_s / len(scales) / hours:.1f}"),
            (f"wall s / audio hour, forward + search of {len(scales)} scales by {pool.jobs} processes",
             f"{wall / hours:.1f}")]


def extra_count(value: str) -> int:
    """``--extra-vocab``'s value: a count of words >= 0, or ``all`` (-1)."""
    if value == "all":
        return -1
    n = int(value)
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected a count >= 0 or 'all', got {value}")
    return n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp-dir", required=True, type=Path)
    p.add_argument("--beams", default="8,13", help="comma-separated search beams")
    p.add_argument("--max-utts", type=int, default=100, help="test utterances to decode")
    p.add_argument("--acoustic-scale", type=float, default=0.1)
    p.add_argument("--threads", type=int, default=1, help="torch threads for the DNN forward")
    p.add_argument("--stage-path", action="store_true", help="time the decode stage's path for one system and "
                   "split (forward and search apart) instead of the graph build and search rows")
    p.add_argument("--system", default="teacher-0", help="--stage-path: the system (teacher-0, ensemble, ...)")
    p.add_argument("--split", default="test", choices=("dev", "test"), help="--stage-path: the split")
    p.add_argument("--jobs", type=int, default=0, help="--stage-path: search processes (default decode.num_jobs)")
    p.add_argument("--device", default="", help="--stage-path: cpu or cuda (default: the stage's choice)")
    p.add_argument("--scales", default="", help="--stage-path: comma-separated scales (default decode.acoustic_scales)")
    p.add_argument("--max-active", default="", help="comma-separated max active states, one per beam or one for "
                   "all (default: the search's default, 7000)")
    p.add_argument("--extra-vocab", default=None, type=extra_count, metavar="N|all",
                   help="rebuild the lang, LM and HCLG with N more CMUdict words (all: every one) before the timing")
    p.add_argument("--extra-vocab-seed", type=int, default=0, help="--extra-vocab: the seed of the draw of words")
    p.add_argument("--extra-vocab-lm", default="unigram", choices=("unigram", "sentence"),
                   help="--extra-vocab: the extra words in the LM's vocabulary only (unigram), or also as one-word "
                   "sentences of its text (sentence)")
    p.add_argument("--work-dir", type=Path, default=None, help="--extra-vocab: keep the lang, LM and graph here "
                   "(reused by the next run with the same inputs) instead of in a temporary directory")
    p.add_argument("--build-only", action="store_true", help="--extra-vocab: stop after the graph build")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    paths = RunPaths(args.exp_dir)
    cfg = from_dict(read_json(paths.config))
    if args.stage_path:
        scales = [float(x) for x in args.scales.split(",")] if args.scales else list(cfg.decode.acoustic_scales)
        rows = stage_path(paths, cfg, args.system, args.split, args.max_utts, args.jobs or cfg.decode.num_jobs,
                          args.device, scales)
        print("| measure | value |\n|---|---|")
        for k, v in rows:
            print(f"| {k} | {v} |")
        return
    if not paths.lm_arpa.exists():
        raise SystemExit(f"{paths.lm_arpa} is missing: run the graph stage first (--stop-stage graph)")
    if args.extra_vocab is None and (args.work_dir is not None or args.build_only):
        raise SystemExit("--work-dir and --build-only go with --extra-vocab")
    beams = [float(b) for b in args.beams.split(",")]
    max_active = [int(m) for m in args.max_active.split(",")] if args.max_active else []
    if len(max_active) not in (0, 1, len(beams)):
        raise SystemExit(f"--max-active: give one value or one per beam ({len(beams)}), not {len(max_active)}")
    if len(max_active) == 1:
        max_active *= len(beams)
    searches = ([SearchConfig(beam=b, max_active=m) for b, m in zip(beams, max_active)] if max_active
                else [SearchConfig(beam=b) for b in beams])
    rows: list[tuple[str, str]] = []
    with contextlib.ExitStack() as stack:
        if args.work_dir is not None and args.extra_vocab is not None:
            tmp = str(args.work_dir)
            args.work_dir.mkdir(parents=True, exist_ok=True)
        else:
            tmp = stack.enter_context(tempfile.TemporaryDirectory())
        graph_dir = Path(tmp)
        if args.extra_vocab is not None:
            build_rows, graph_dir = extra_vocab_graph(paths, cfg, args.extra_vocab, args.extra_vocab_seed,
                                                      args.extra_vocab_lm, Path(tmp))
            rows += build_rows
            if args.build_only:
                print("| measure | value |\n|---|---|")
                for k, v in rows:
                    print(f"| {k} | {v} |")
                return
        else:
            build_s, info = build_graph(paths, cfg.decode.self_loop_scale, Path(tmp))
            rows += [("HCLG build (s)", f"{build_s:.2f}"),
                     ("HCLG states / arcs", f"{info['HCLG']['states']:,} / "
                                                    + (f"{info['HCLG']['arcs']:,}" if info['HCLG']['arcs'] is not None
                                                       else "n/a (not counted above 2 M states)")),
                     ("context width", str(info["context_width"]))]
        model = load_model(paths.align)
        test = read_split(paths, "test", max_utts=args.max_utts)
        frames = sum(len(f) for f in test.feats.values())
        audio_s = frames * 0.01
        rows.append(("test audio (s) / utterances", f"{audio_s:.1f} / {len(test.utts)}"))
        teacher = TrainRunDir(paths.teacher_dir(0)).model
        prior = train_log_priors(paths, model.num_pdfs)
        if teacher.exists():
            from asr_kd.nn.ensemble import utterance_log_posteriors
            from asr_kd.nn.models import load_model as load_dnn

            dnn, _ = load_dnn(teacher)
            t0 = time.perf_counter()
            lps = {u: utterance_log_posteriors(dnn, torch.from_numpy(test.feats[u]), cfg.model.left_context,
                                               cfg.model.right_context).numpy() for u in test.utts}
            rows.append((f"DNN forward RTF ({args.threads} thread)", f"{(time.perf_counter() - t0) / audio_s:.4f}"))
            source = "teacher-0"
        else:
            lps = None
            source = "gmm"
        for search in searches:
            beam = search.beam
            decoder = read_hclg_decoder(graph_dir, model.trans_model, search)
            t0 = time.perf_counter()
            if lps is not None:
                hyps = [decoder.decode(u, hybrid_scores(lps[u], prior, decoder.tid_pdf, args.acoustic_scale))
                        for u in test.utts]
            else:
                from asr_kd.align.feats import gmm_features, read_mfcc
                from asr_kd.data.manifest import read_manifest

                raw, _ = read_mfcc(paths.mfcc_scp("test"), test.utts)
                spk = {u.id: u.speaker for u in read_manifest(paths.manifest("test"))}
                feats = gmm_features(raw, spk)
                t0 = time.perf_counter()
                hyps = [decoder.decode_gmm(u, model.am, feats[u], args.acoustic_scale) for u in test.utts if u in feats]
            wall = time.perf_counter() - t0
            stats, _ = score(test.refs, {h.utt: h.words for h in hyps})
            label = f"beam {beam:g}" + (f" / max-active {search.max_active}" if max_active else "")
            rows.append((f"{source} search RTF, {label}", f"{wall / audio_s:.4f} (WER {100 * stats.wer:.1f}%)"))
            t0 = time.perf_counter()
            hyps = [decoder.decode(u, hybrid_scores(oracle_log_posteriors(test.labels[u], model.num_pdfs), prior,
                                                    decoder.tid_pdf, 1.0)) for u in test.utts if u in test.labels]
            wall = time.perf_counter() - t0
            stats, _ = score(test.refs, {h.utt: h.words for h in hyps})
            rows.append((f"oracle search RTF, {label}", f"{wall / audio_s:.4f} (WER {100 * stats.wer:.1f}%)"))
    print("| measure | value |\n|---|---|")
    for k, v in rows:
        print(f"| {k} | {v} |")


if __name__ == "__main__":
    main()
