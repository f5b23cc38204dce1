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

Needs a run that finished the align and shards stages (the graph is rebuilt in a temporary
directory, so the run's own graph is not touched). The acoustic scores come from the run's
teacher 0 when its model file exists (the hybrid DNN path: forward pass + search, timed apart),
else from the GMM of the align stage; an "oracle" row decodes confident posteriors made from the
test alignments (the search cost of a good model, and a check of the graph). Real-time factor = processing seconds / audio seconds
(10 ms frames); below 1 is faster than real time. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
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


def build_graph(paths: RunPaths, self_loop_scale: float, out: Path) -> tuple[float, dict]:
    lang = load_lang(paths.lang)
    model = load_model(paths.align)
    inputs = GraphInputs(lang.read_l_fst(disambig=True), lang.disambig_phones, lang.words_txt_path,
                         model.trans_model, model.ctx_dep, self_loop_scale=self_loop_scale)
    t0 = time.perf_counter()
    info = make_graph(inputs, paths.lm_arpa, out, [lang.l_disambig_fst_path, paths.tree, paths.final_mdl])
    return time.perf_counter() - t0, info


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
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        build_s, info = build_graph(paths, cfg.decode.self_loop_scale, Path(tmp))
        rows += [("HCLG build (s)", f"{build_s:.2f}"),
                 ("HCLG states / arcs", f"{info['HCLG']['states']:,} / {info['HCLG']['arcs']:,}"),
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
        for beam in (float(b) for b in args.beams.split(",")):
            decoder = read_hclg_decoder(Path(tmp), model.trans_model, SearchConfig(beam=beam))
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
            rows.append((f"{source} search RTF, beam {beam:g}", f"{wall / audio_s:.4f} (WER {100 * stats.wer:.1f}%)"))
            t0 = time.perf_counter()
            hyps = [decoder.decode(u, hybrid_scores(oracle_log_posteriors(test.labels[u], model.num_pdfs), prior,
                                                    decoder.tid_pdf, 1.0)) for u in test.utts if u in test.labels]
            wall = time.perf_counter() - t0
            stats, _ = score(test.refs, {h.utt: h.words for h in hyps})
            rows.append((f"oracle search RTF, beam {beam:g}", f"{wall / audio_s:.4f} (WER {100 * stats.wer:.1f}%)"))
    print("| measure | value |\n|---|---|")
    for k, v in rows:
        print(f"| {k} | {v} |")


if __name__ == "__main__":
    main()
