"""Convert a LibriSpeech-layout corpus into a Kaldi data dir per split, or lhotse manifests.

    python -m data_prep.convert --to kaldi  SRC OUT [--pipe]   # OUT/{train,dev,test}/wav.scp text utt2spk spk2utt
    python -m data_prep.convert --to lhotse SRC OUT [--cuts]   # OUT/{recordings,supervisions}_{train,dev,test}.jsonl.gz
                                                               # (--cuts: OUT/cuts_{train,dev,test}.jsonl.gz)

Each split is written under the name the recipe looks for by default (``train``, ``dev``,
``test``), so ``--data-root OUT`` reads the result with no further settings. Which subsets of SRC
make each split: ``--train/--dev/--test`` (comma lists), else SRC's own (the synthetic corpus's,
or LibriSpeech's train-clean-100 / dev-clean / test-clean). Audio is not copied: ``wav.scp`` and
the recordings name SRC's files by absolute path (``--pipe``: as a ``sox FILE -t wav - |``
command, which Kaldi's own tools can read for FLAC too). An LM text in SRC's root is copied.

Transcript lines without audio and audio without transcript lines are left out and counted (the
LibriSpeech reader's rules); audio is not decoded here, the recipe's prepare stage checks it.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
from collections import defaultdict
from pathlib import Path

from asr_kd.data.manifest import Utterance
from asr_kd.fileio import write_text
from data_prep.formats import default_splits
from data_prep.librispeech import LM_TEXT_NAMES, CorpusError, Skips, chapter_audio, read_transcripts, subset_dir


def scan(root: Path, subsets: tuple[str, ...], skips: Skips) -> list[Utterance]:
    """Every utterance with both audio and a transcript line in ``subsets`` of ``root``, sorted by
    id (num_samples and sample_rate left 0: not read here)."""
    utts = []
    for subset in subsets:
        d = subset_dir(root, subset)
        for chapter_dir in sorted(c for s in d.iterdir() if s.is_dir() for c in s.iterdir() if c.is_dir()):
            speaker, chapter = chapter_dir.parent.name, chapter_dir.name
            audio = chapter_audio(chapter_dir, skips)
            trans = chapter_dir / f"{speaker}-{chapter}.trans.txt"
            texts, named = read_transcripts(trans, speaker, chapter, skips) if trans.exists() else ({}, set())
            for utt, text in texts.items():
                if utt in audio:
                    utts.append(Utterance(utt, speaker, chapter, str(audio[utt].resolve()), text, 0, 0))
                else:
                    skips.add("transcript_without_audio", f"{trans} ({utt})")
            for utt in sorted(set(audio) - named):
                skips.add("audio_without_transcript", audio[utt])
    return sorted(utts, key=lambda u: u.id)


def write_kaldi(utts: list[Utterance], out: Path, pipe: bool = False) -> None:
    """``out/{wav.scp,text,utt2spk,spk2utt}``, sorted by id as Kaldi wants."""
    wav = [f"{u.id} sox {shlex.quote(u.audio)} -t wav - |" if pipe else f"{u.id} {u.audio}" for u in utts]
    spk2utt: dict[str, list[str]] = defaultdict(list)
    for u in utts:
        spk2utt[u.speaker].append(u.id)
    write_text(out / "wav.scp", "".join(line + "\n" for line in wav))
    write_text(out / "text", "".join(f"{u.id} {u.text}\n" for u in utts))
    write_text(out / "utt2spk", "".join(f"{u.id} {u.speaker}\n" for u in utts))
    write_text(out / "spk2utt", "".join(f"{s} {' '.join(ids)}\n" for s, ids in sorted(spk2utt.items())))


def write_lhotse(utts: list[Utterance], out: Path, split: str, cuts: bool = False) -> None:
    """A RecordingSet and a SupervisionSet (or, with ``cuts``, a CutSet) of ``utts``: one recording
    per audio file, one supervision spanning it."""
    from data_prep.lhotse_corpus import import_lhotse

    lhotse = import_lhotse()
    recs = [lhotse.Recording.from_file(u.audio, recording_id=u.id) for u in utts]
    sups = [lhotse.SupervisionSegment(id=u.id, recording_id=u.id, start=0.0, duration=r.duration, channel=0,
                                      text=u.text, speaker=u.speaker, language="English")
            for u, r in zip(utts, recs)]
    recordings, supervisions = lhotse.RecordingSet.from_recordings(recs), lhotse.SupervisionSet.from_segments(sups)
    out.mkdir(parents=True, exist_ok=True)
    if cuts:
        lhotse.CutSet.from_manifests(recordings=recordings, supervisions=supervisions).to_file(
            out / f"cuts_{split}.jsonl.gz")
    else:
        recordings.to_file(out / f"recordings_{split}.jsonl.gz")
        supervisions.to_file(out / f"supervisions_{split}.jsonl.gz")


def convert(src: Path, out: Path, to: str, splits: dict[str, tuple[str, ...]], pipe: bool = False,
            cuts: bool = False) -> dict[str, dict]:
    """Write ``src`` in format ``to`` under ``out``; per split: utterances written, skipped by reason."""
    if not Path(src).is_dir():
        raise CorpusError(f"{src} does not exist; give a LibriSpeech-layout corpus root")
    report = {}
    for split, subsets in splits.items():
        skips = Skips()
        utts = scan(Path(src), subsets, skips)
        if to == "kaldi":
            write_kaldi(utts, Path(out) / split, pipe=pipe)
        else:
            write_lhotse(utts, Path(out), split, cuts=cuts)
        report[split] = {"subsets": list(subsets), "utterances": len(utts), "skipped": skips.summary()}
    for name in LM_TEXT_NAMES:
        if (Path(src) / name).is_file():
            shutil.copyfile(Path(src) / name, Path(out) / name)
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m data_prep.convert", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--to", required=True, choices=("kaldi", "lhotse"), help="the format to write")
    p.add_argument("src", type=Path, help="a LibriSpeech-layout corpus root")
    p.add_argument("out", type=Path, help="where to write (created)")
    p.add_argument("--pipe", action="store_true", help="kaldi: wav.scp entries as 'sox FILE -t wav - |' commands")
    p.add_argument("--cuts", action="store_true", help="lhotse: one CutSet per split instead of recordings + supervisions")
    for split in ("train", "dev", "test"):
        p.add_argument(f"--{split}", default="", metavar="SUBSETS", help=f"subsets of SRC that make {split} (comma list)")
    args = p.parse_args(argv)
    own = default_splits("librispeech", args.src)
    given = {"train": args.train, "dev": args.dev, "test": args.test}
    splits = {s: tuple(x for x in given[s].split(",") if x) or own[s] for s in own}
    try:
        report = convert(args.src, args.out, args.to, splits, pipe=args.pipe, cuts=args.cuts)
    except CorpusError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for split, r in report.items():
        skipped = r["skipped"]["counts"]
        print(f"{split}: {r['utterances']} utterances from {', '.join(r['subsets'])}"
              + (f"; left out: {skipped}" if skipped else ""))
    print(f"written to {args.out} ({args.to}); run: python -m asr_kd.recipes.librispeech --data-root {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
