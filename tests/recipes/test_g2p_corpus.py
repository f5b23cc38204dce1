"""A corpus whose transcripts have words CMUdict lacks runs with data.oov_policy=g2p (the default)
through the command line to labelled shards, and those utterances are kept (issue 15)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

from asr_kd.data.lexicon import in_cmudict
from data_prep.synthetic import SAMPLE_RATE, Job, Voice, render

pytestmark = pytest.mark.slow

MADE_UP = ["ZORBLAX", "QUENTARIS", "BLIVOTRIN", "SNARGLEWICK", "FRUMPELDOR", "GLAVISHNOK", "TREMBLIQUE"]


def espeak_voices(root: Path) -> dict[str, Voice]:
    """Speaker id -> its espeak-ng voice, from SPEAKERS.TXT (lines like
    ``101  | M | train-synth |  1.35 | espeak-ng en-gb+benjamin s185 p47``)."""
    voices = {}
    for line in (root / "SPEAKERS.TXT").read_text().splitlines():
        m = re.match(r"(\d+)\s*\|\s*([MF])\s*\|.*\|\s*espeak-ng (\S+) s(\S+) p(\d+)(?: shift([+-]\d+))?$", line)
        if m:
            voices[m[1]] = Voice("espeak", m[3], m[2], float(m[4]), int(m[5]), int(m[6] or 0))
    return voices


def add_made_up_words(root: Path, subset: str, n_utts: int, words: list[str]) -> list[str]:
    """Give ``n_utts`` utterances of ``subset`` (espeak-ng speakers) a made-up word in place of one of
    theirs, with audio of the new text read by the speaker's voice; their ids."""
    voices = espeak_voices(root)
    changed: list[str] = []
    for trans in sorted((root / subset).glob("*/*/*.trans.txt")):
        speaker = trans.parent.parent.name
        if speaker not in voices or len(changed) == n_utts:
            continue
        lines = trans.read_text().splitlines()
        for i in range(2):  # the first two utterances of the chapter
            utt, *text = lines[i].split()
            text[len(text) // 2] = words[len(changed)]
            lines[i] = f"{utt} {' '.join(text)}"
            audio = render(Job(path="", text=" ".join(text), voice=voices[speaker], peak=0.6, snr_db=30.0,
                               pad_s=(0.3, 0.3), noise_seed=len(changed)))
            sf.write(trans.parent / f"{utt}.flac", audio, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
            changed.append(utt)
            if len(changed) == n_utts:
                break
        trans.write_text("\n".join(lines) + "\n")
    assert len(changed) == n_utts
    return changed


def test_oov_utterances_are_pronounced_by_g2p_and_kept(smoke_corpus: Path, tmp_path: Path) -> None:
    assert not any(in_cmudict(w) for w in MADE_UP)
    corpus = Path(shutil.copytree(smoke_corpus, tmp_path / "corpus"))
    train_ids = add_made_up_words(corpus, "train-synth", 6, MADE_UP[:6])
    dev_ids = add_made_up_words(corpus, "dev-synth", 1, MADE_UP[6:])
    exp = tmp_path / "exp"
    res = subprocess.run([sys.executable, "-m", "asr_kd.recipes.librispeech", "--preset", "smoke", "--data-root",
                          str(corpus), "--exp-dir", str(exp), "--stop-stage", "shards"],
                         capture_output=True, text=True, timeout=1200)
    assert res.returncode == 0, res.stderr[-4000:]

    def summary(stage: str) -> dict:
        return json.loads((exp / stage / "DONE.json").read_text())["summary"]

    prepare = summary("prepare")
    assert prepare["skipped_total"] == 0 and prepare["g2p_words"] == 7
    assert prepare["splits"]["train"]["utterances"] == 200 and prepare["splits"]["train"]["g2p_utterances"] == 6
    assert prepare["splits"]["dev"]["utterances"] == 20 and prepare["splits"]["dev"]["g2p_utterances"] == 1
    lang = summary("lang")
    assert lang["g2p_transcript_words"] == 7 and lang["words_without_pronunciation"] == 0
    assert lang["g2p_failed_words"] == []
    listed = dict(line.split(maxsplit=1) for line in (exp / "lang" / "lexicon_g2p.txt").read_text().splitlines()
                  if not line.startswith("#"))
    assert set(MADE_UP) <= set(listed)
    lexicon = (exp / "lang" / "lexicon.txt").read_text()
    assert all(f"{w} {listed[w]}\n" in lexicon for w in MADE_UP)
    align = summary("align")
    assert align["splits"]["train"]["aligned"] == 200 and align["splits"]["dev"]["aligned"] == 20
    shards = summary("shards")["splits"]
    assert shards["train"]["utterances"] == 200 and shards["dev"]["utterances"] == 20
    for split, ids in (("train", train_ids), ("dev", dev_ids)):
        manifest = (exp / "prepare" / f"manifest-{split}.jsonl").read_text().splitlines()
        assert set(ids) <= {json.loads(line)["id"] for line in manifest}
