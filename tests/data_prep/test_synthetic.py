"""The synthetic corpus: LibriSpeech layout, disjoint speakers, both sexes everywhere, determinism."""

from __future__ import annotations

import json
import os
import random
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asr_kd.data.lexicon import in_cmudict
from asr_kd.data.manifest import Utterance
from data_prep import synthetic
from data_prep.librispeech import CorpusError
from data_prep.synthetic import (
    LM_TEXT_NAME,
    Job,
    MARKER_NAME,
    SIZES,
    SPEAKERS_NAME,
    SUBSETS,
    assign_speakers,
    draw_sentences,
    ensure_corpus,
    festival_speakers,
    speaker_synthesizers,
)
from data_prep.synthetic_text import SentenceGenerator, vocabulary

UTT = re.compile(r"^(\d+)-(\d+)-(\d{4})$")


def transcripts(root: Path) -> dict[str, dict[str, str]]:
    """subset -> utterance id -> text, read from the trans.txt files."""
    out: dict[str, dict[str, str]] = {}
    for subset in SUBSETS.values():
        out[subset] = {}
        for trans in sorted((root / subset).glob("*/*/*.trans.txt")):
            for line in trans.read_text().splitlines():
                utt, text = line.split(" ", 1)
                out[subset][utt] = text
    return out


def speakers_table(root: Path) -> list[dict[str, str]]:
    rows = []
    for line in (root / SPEAKERS_NAME).read_text().splitlines():
        if line.startswith(";"):
            continue
        spk, sex, subset, _minutes, name = (f.strip() for f in line.split("|"))
        rows.append({"id": spk, "sex": sex, "subset": subset, "name": name})
    return rows


def test_librispeech_layout(smoke_corpus: Path) -> None:
    assert sorted(p.name for p in smoke_corpus.iterdir() if p.is_dir()) == sorted(SUBSETS.values())
    for subset in SUBSETS.values():
        flacs = sorted((smoke_corpus / subset).glob("*/*/*.flac"))
        assert flacs
        for f in flacs:
            m = UTT.match(f.stem)
            assert m, f
            speaker, chapter = m.group(1), m.group(2)
            assert (f.parent.parent.name, f.parent.name) == (speaker, chapter)
            assert (f.parent / f"{speaker}-{chapter}.trans.txt").exists()
            info = sf.info(str(f))
            assert (info.samplerate, info.channels, info.format) == (16000, 1, "FLAC")
        ids = set(transcripts(smoke_corpus)[subset])
        assert ids == {f.stem for f in flacs}
        for text in transcripts(smoke_corpus)[subset].values():
            assert text == text.upper() and text.split() and all(w.isalpha() for w in text.split())


def test_marker_counts_match_files(smoke_corpus: Path) -> None:
    marker = json.loads((smoke_corpus / MARKER_NAME).read_text())
    spec = SIZES["smoke"]
    for split, subset in SUBSETS.items():
        n_spk = sum(spec.speakers[split].values())
        assert marker["splits"][split]["speakers"] == n_spk
        assert marker["splits"][split]["utterances"] == n_spk * spec.utts_per_speaker[split]
        assert len(transcripts(smoke_corpus)[subset]) == n_spk * spec.utts_per_speaker[split]
        assert marker["splits"][split]["hours"] > 0


def test_speakers_disjoint_and_both_sexes_of_both_synthesizers(smoke_corpus: Path) -> None:
    rows = speakers_table(smoke_corpus)
    by_subset: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        by_subset.setdefault(r["subset"], []).append(r)
    dirs = {s: {p.name for p in (smoke_corpus / s).iterdir()} for s in SUBSETS.values()}
    for subset, rs in by_subset.items():
        assert {r["id"] for r in rs} == dirs[subset]
        kinds = {(r["name"].split()[0], r["sex"]) for r in rs}
        assert kinds == {("espeak-ng", "M"), ("espeak-ng", "F"), ("flite", "M"), ("flite", "F")}
    subsets = list(SUBSETS.values())
    for i, a in enumerate(subsets):
        for b in subsets[i + 1:]:
            assert not dirs[a] & dirs[b]
            assert not {r["name"] for r in by_subset[a]} & {r["name"] for r in by_subset[b]}


@pytest.mark.parametrize("size", list(SIZES))
def test_speaker_assignment_every_size(size: str) -> None:
    spec = SIZES[size]
    voices = assign_speakers(spec, seed=3)
    assert voices == assign_speakers(spec, seed=3)
    all_voices = [v for vs in voices.values() for v in vs]
    assert len(set(all_voices)) == len(all_voices)
    espeak_pairs = {split: {v.name for v in vs if v.synth == "espeak"} for split, vs in voices.items()}
    assert not espeak_pairs["train"] & espeak_pairs["dev"]
    assert not espeak_pairs["train"] & espeak_pairs["test"]
    assert not espeak_pairs["dev"] & espeak_pairs["test"]
    # held-out speakers are new voices of accents heard in training (the espeak base voice)
    for sex in ("M", "F"):
        train_bases = {v.name.split("+")[0] for v in voices["train"] if v.synth == "espeak" and v.sex == sex}
        for split in ("dev", "test"):
            assert {v.name.split("+")[0] for v in voices[split] if v.synth == "espeak" and v.sex == sex} <= train_bases
    for split, vs in voices.items():
        counts = {(s, g): sum(v.synth == s and v.sex == g for v in vs) for s, g in spec.speakers[split]}
        assert counts == spec.speakers[split]
        assert all(n >= 1 for n in counts.values())
    if size != "smoke":
        assert len(voices["train"]) >= 20


def test_vocabulary_in_cmudict_and_sentences_use_it() -> None:
    vocab = vocabulary()
    assert len(vocab) >= 300
    assert [w for w in vocab if not in_cmudict(w)] == []
    gen = SentenceGenerator(random.Random(1))
    used = {w for _ in range(3000) for w in gen.sentence().split()}
    assert used <= set(vocab)


def test_held_out_sentences_absent_from_train_and_lm_text(smoke_corpus: Path) -> None:
    texts = transcripts(smoke_corpus)
    train = set(texts["train-synth"].values())
    held_out = set(texts["dev-synth"].values()) | set(texts["test-synth"].values())
    assert not train & held_out
    lm = (smoke_corpus / LM_TEXT_NAME).read_text().splitlines()
    assert len(lm) == SIZES["smoke"].lm_sentences > len(train)
    assert not set(lm) & held_out
    # also for a larger draw, where the generator repeats itself more often
    per_split, lm_big = draw_sentences(SIZES["tiny"], {"train": 24, "dev": 6, "test": 6}, seed=0)
    assert not set(lm_big) & (set(per_split["dev"]) | set(per_split["test"]))
    assert not set(per_split["train"]) & (set(per_split["dev"]) | set(per_split["test"]))


def test_same_seed_same_corpus_other_seed_differs(smoke_corpus: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    assert synthetic.main(["--out", str(again), "--size", "smoke", "--seed", "0"]) == 0
    assert transcripts(again) == transcripts(smoke_corpus)
    assert (again / LM_TEXT_NAME).read_text() == (smoke_corpus / LM_TEXT_NAME).read_text()
    for f in sorted(smoke_corpus.glob("*/*/*/*.flac")):
        a, _ = sf.read(str(f), dtype="int16")
        b, _ = sf.read(str(again / f.relative_to(smoke_corpus)), dtype="int16")
        assert np.array_equal(a, b), f
    other = {**SIZES["smoke"].speakers}
    assert draw_sentences(SIZES["smoke"], {s: sum(other[s].values()) for s in other}, seed=1) != \
        draw_sentences(SIZES["smoke"], {s: sum(other[s].values()) for s in other}, seed=0)


def test_audio_has_edge_silence_and_mild_noise(smoke_corpus: Path) -> None:
    f = sorted(smoke_corpus.glob("train-synth/*/*/*.flac"))[0]
    x, sr = sf.read(str(f))
    edge = x[: int(0.1 * sr)]
    assert 0 < np.abs(edge).max() < 0.2 * np.abs(x).max()  # noise, well below the speech


def test_ensure_corpus_skips_done_and_refuses_mismatch(smoke_corpus: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    def no_build(*args: object, **kwargs: object) -> None:
        raise AssertionError("should not rebuild")

    monkeypatch.setattr(synthetic, "build_corpus", no_build)
    ensure_corpus(smoke_corpus, "smoke", 0)  # finished: nothing to do
    with pytest.raises(CorpusError, match="seed"):
        ensure_corpus(smoke_corpus, "smoke", 1)
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "something.txt").write_text("x")
    with pytest.raises(CorpusError, match="not a finished synthetic corpus"):
        ensure_corpus(stray, "smoke", 0)
    with pytest.raises(ValueError, match="unknown synthetic corpus size"):
        ensure_corpus(tmp_path / "x", "huge", 0)


def test_killed_build_leaves_no_corpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(jobs: list, workers: int) -> list[int]:
        raise KeyboardInterrupt

    root = tmp_path / "corpus"
    monkeypatch.setattr(synthetic, "_synthesize_all", crash)
    with pytest.raises(KeyboardInterrupt):
        ensure_corpus(root, "smoke", 0, workers=1)
    assert not root.exists()
    assert (tmp_path / ".corpus.partial").exists()  # the leftover is not mistaken for a corpus
    monkeypatch.undo()
    ensure_corpus(root, "smoke", 0)
    assert (root / MARKER_NAME).exists() and not (tmp_path / ".corpus.partial").exists()


def test_missing_synthesizer_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_which = synthetic.shutil.which
    monkeypatch.setattr(synthetic.shutil, "which", lambda name: None if name == "flite" else real_which(name))
    with pytest.raises(CorpusError, match="flite not found.*apt-get install"):
        ensure_corpus(tmp_path / "corpus", "smoke", 0)
    assert not (tmp_path / "corpus").exists()


def test_festival_speakers_join_train_only_and_leave_every_other_file_unchanged(tmp_path: Path) -> None:
    spec = SIZES["tiny"]
    jobs, voices, trans, lm, speakers = synthetic._plan(tmp_path, spec, 0, noise=True)
    jobs_f, voices_f, trans_f, lm_f, speakers_f = synthetic._plan(tmp_path, spec, 0, noise=True, festival=True)
    # every espeak-ng and flite utterance: the same id, text, voice, level, padding and noise
    assert jobs_f[: len(jobs)] == jobs and lm_f == lm
    assert all(trans_f[path] == lines for path, lines in trans.items())
    extra = jobs_f[len(jobs):]
    assert len(extra) == sum(spec.festival_train) * spec.utts_per_speaker["train"]
    assert {j.voice.synth for j in extra} == {"festival"} and {j.voice.sex for j in extra} == {"M", "F"}
    assert all(f"{os.sep}train-synth{os.sep}" in j.path for j in extra)
    # new speakers, after every other id, each with sentences of its own (none of dev's or test's)
    new = {spk for spk in speakers_f if spk not in speakers}
    assert min(map(int, new)) > max(map(int, speakers)) and len(new) == sum(spec.festival_train)
    texts = [j.text for j in jobs_f]
    assert len(set(texts)) == len(texts)
    assert voices_f["dev"] == voices["dev"] and voices_f["test"] == voices["test"]
    assert len(voices_f["train"]) == len(voices["train"]) + len(new)


def test_festival_voice_renders_both_sexes_at_16k() -> None:
    f0 = {}
    for voice in festival_speakers(SIZES["smoke"], 0):
        job = Job(path="", text="the old man read a book by the fire", voice=voice, peak=0.5, snr_db=float("inf"),
                  pad_s=(0.1, 0.1), noise_seed=0)
        x = synthetic.render(job)
        assert x.dtype == np.float32 and len(x) > synthetic.SAMPLE_RATE and np.abs(x).max() == pytest.approx(0.5, 0.01)
        import torch
        import torchaudio.functional as AF

        f0[voice.sex] = float(AF.detect_pitch_frequency(torch.from_numpy(x), synthetic.SAMPLE_RATE).median())
    assert f0["F"] > 1.4 * f0["M"], f0  # the female speakers sound female: F0 target and sox shift


def test_speakers_table_names_each_speakers_synthesizer(tmp_path: Path) -> None:
    voices = [*assign_speakers(SIZES["smoke"], 0)["train"][:1], *festival_speakers(SIZES["smoke"], 0)]
    voices.append(next(v for v in assign_speakers(SIZES["smoke"], 0)["test"] if v.synth == "flite"))
    table = synthetic._speakers_table({str(200 + i): {"subset": "train-synth", "voice": v} for i, v in enumerate(voices)},
                                      {str(200 + i): 1.0 for i in range(len(voices))})
    (tmp_path / SPEAKERS_NAME).write_text(table)
    assert list(speaker_synthesizers(tmp_path).values()) == [v.synth for v in voices]
    (tmp_path / SPEAKERS_NAME).write_text(table + "999  | M | train-synth |  1.00 | mbrola us1\n")
    with pytest.raises(CorpusError, match="999.*regenerate"):
        speaker_synthesizers(tmp_path)


def test_festival_corpus_is_told_apart_and_needs_festival(smoke_corpus: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(synthetic, "build_corpus", lambda *a, **k: pytest.fail("should not build"))
    with pytest.raises(CorpusError, match="'festival': False.*'festival': True"):
        ensure_corpus(smoke_corpus, "smoke", 0, festival=True)
    real_which = synthetic.shutil.which
    monkeypatch.setattr(synthetic.shutil, "which", lambda name: None if name == "text2wave" else real_which(name))
    with pytest.raises(CorpusError, match="text2wave.*apt-get install festival festvox-kdlpc16k"):
        ensure_corpus(tmp_path / "corpus", "smoke", 0, festival=True)
    assert not (tmp_path / "corpus").exists()
    # text2wave exits 0 after a Scheme error: a voice that is not installed must still be an error
    missing = synthetic.Voice("festival", "nosuch", "M", rate=1.0, pitch=0, shift_cents=0)
    with pytest.raises(CorpusError, match="voice_nosuch_diphone"):
        synthetic._festival(missing, "test")


def _speakers_corpus(root: Path) -> Path:
    root.mkdir()
    (root / SPEAKERS_NAME).write_text("101  | M | train-synth |  1.00 | espeak-ng en-gb+m1 s160 p50\n"
                                      "102  | F | train-synth |  1.00 | festival ked shift+400\n"
                                      "103  | M | train-synth |  1.00 | flite kal16 stretch1.00 f0own shift+0\n")
    return root


def _utt(uid: str, speaker: str) -> Utterance:
    return Utterance(id=uid, speaker=speaker, chapter="1", audio="", text="A", num_samples=1, sample_rate=16000)


def test_augmented_copies_take_their_sources_synthesizer(tmp_path: Path) -> None:
    utts = [_utt("101-1-0", "101"), _utt("sp0.9-101-1-0", "sp0.9-101"), _utt("ps1-102-1-0", "ps1-102"),
            _utt("103-1-0", "103"), _utt("999-1-0", "999")]
    assert synthetic.utterance_synthesizers(_speakers_corpus(tmp_path / "c"), utts) == {
        "101-1-0": "espeak", "sp0.9-101-1-0": "espeak", "ps1-102-1-0": "festival", "103-1-0": "flite"}


def test_test_groups_by_synthesizer_and_the_voices_of_a_model_card(smoke_corpus: Path, tmp_path: Path) -> None:
    root = _speakers_corpus(tmp_path / "c")
    utts = [_utt("101-1-0", "101"), _utt("103-1-0", "103"), _utt("101-1-1", "101")]
    assert synthetic.test_groups(root, utts) == {"espeak": ["101-1-0", "101-1-1"], "flite": ["103-1-0"]}
    assert synthetic.test_groups(root, utts[::2]) is None  # one synthesizer: no groups
    assert synthetic.test_groups(tmp_path, utts) is None  # no synthetic corpus
    assert synthetic.voices_description(smoke_corpus) == "espeak-ng and flite"
    (root / MARKER_NAME).write_text(json.dumps({"festival": True}))
    assert synthetic.voices_description(root) == "espeak-ng and flite, festival's ked voice"
