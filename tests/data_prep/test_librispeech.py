"""The LibriSpeech-layout reader: manifests from the smoke corpus, and every kind of bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asr_kd.config import DataConfig
from asr_kd.data.manifest import read_manifest
from asr_kd.paths import RunPaths
from asr_kd.stages.prepare import prepare_manifests
from data_prep.librispeech import CorpusError
from data_prep.synthetic import MARKER_NAME, SIZES, SUBSETS

PER_CHAPTER = SIZES["smoke"].utts_per_chapter
TRAIN_UTTS = 8 * PER_CHAPTER  # 8 train speakers, one chapter each
DEV_UTTS = 4 * 5

SPLIT_SUBSETS = {split: (subset,) for split, subset in SUBSETS.items()}


def prepare(root: Path, tmp_path: Path, **data: object) -> dict:
    return prepare_manifests(root, SPLIT_SUBSETS, RunPaths(tmp_path / "exp"), DataConfig(**data))


@pytest.fixture
def corpus(smoke_corpus: Path, tmp_path: Path) -> Path:
    """A private copy of the smoke corpus that a test may break."""
    return Path(shutil.copytree(smoke_corpus, tmp_path / "corpus"))


def chapters(root: Path, subset: str = "train-synth") -> list[Path]:
    return sorted(c for c in (root / subset).glob("*/*") if c.is_dir())


def trans_file(chapter: Path) -> Path:
    return chapter / f"{chapter.parent.name}-{chapter.name}.trans.txt"


def test_clean_corpus_manifests(smoke_corpus: Path, tmp_path: Path) -> None:
    summary = prepare(smoke_corpus, tmp_path)
    marker = json.loads((smoke_corpus / MARKER_NAME).read_text())
    assert summary["skipped_total"] == 0
    assert summary["lm_text"] == str((smoke_corpus / "lm-text.txt").resolve())
    for split in SUBSETS:
        utts = read_manifest(RunPaths(tmp_path / "exp").manifest(split))
        s = summary["splits"][split]
        assert s["utterances"] == len(utts) == marker["splits"][split]["utterances"]
        assert s["speakers"] == marker["splits"][split]["speakers"]
        assert s["hours"] == pytest.approx(marker["splits"][split]["hours"], abs=1e-3)
        assert [u.id for u in utts] == sorted(u.id for u in utts)
        u = utts[0]
        assert Path(u.audio).is_file() and u.sample_rate == 16000
        assert u.num_samples == sf.info(u.audio).frames
        assert u.id.startswith(f"{u.speaker}-{u.chapter}-")
        trans = trans_file(Path(u.audio).parent).read_text()
        assert f"{u.id} {u.text}\n" in trans


def test_each_bad_input_is_skipped_counted_and_named(corpus: Path, tmp_path: Path) -> None:
    ch = chapters(corpus)  # 8 train chapters of PER_CHAPTER utterances each
    flacs = [sorted(c.glob("*.flac")) for c in ch]
    # 0: garbage bytes instead of FLAC
    flacs[0][0].write_bytes(b"this is not audio" * 50)
    # 1: a FLAC cut in half (its header still promises every sample)
    data = flacs[1][0].read_bytes()
    flacs[1][0].write_bytes(data[: len(data) // 2])
    # 2: wrong sample rate
    sf.write(str(flacs[2][0]), np.zeros(8000, dtype=np.float32), 8000, format="FLAC")
    # 3: an empty transcript line
    lines = trans_file(ch[3]).read_text().splitlines()
    lines[0] = lines[0].split()[0]
    trans_file(ch[3]).write_text("\n".join(lines) + "\n")
    # 4: the chapter's transcript file is missing
    trans_file(ch[4]).unlink()
    # 5: a transcript line whose audio is missing
    flacs[5][0].unlink()
    # 6: audio without a transcript line
    orphan = ch[6] / f"{ch[6].parent.name}-{ch[6].name}-0099.flac"
    shutil.copy(flacs[6][1], orphan)
    # 7: stereo audio
    sf.write(str(flacs[7][0]), np.zeros((16000, 2), dtype=np.float32), 16000, format="FLAC")

    summary = prepare(corpus, tmp_path)
    train = summary["splits"]["train"]
    expected = {"unreadable_audio": 2, "wrong_sample_rate": 1, "empty_transcript": 1,
                "missing_transcript_file": PER_CHAPTER, "transcript_without_audio": 1, "audio_without_transcript": 1,
                "not_mono": 1}
    assert train["skipped"]["counts"] == expected
    assert train["utterances"] == TRAIN_UTTS - 2 - 1 - 1 - PER_CHAPTER - 1 - 1
    ex = train["skipped"]["examples"]
    assert sorted(ex["unreadable_audio"]) == sorted([str(flacs[0][0]), str(flacs[1][0])])
    assert ex["wrong_sample_rate"] == [str(flacs[2][0])]
    assert ex["empty_transcript"] == [f"{trans_file(ch[3])}:1"]
    named = sorted(ex["missing_transcript_file"])  # the first few of the chapter's files are named
    assert 1 <= len(named) <= PER_CHAPTER and set(named) <= {str(p) for p in flacs[4]}
    assert ex["transcript_without_audio"][0].startswith(str(trans_file(ch[5])))
    assert flacs[5][0].stem in ex["transcript_without_audio"][0]
    assert ex["audio_without_transcript"] == [str(orphan)]
    assert ex["not_mono"] == [str(flacs[7][0])]
    assert summary["skipped_total"] == sum(expected.values())
    assert summary["splits"]["dev"]["skipped"]["counts"] == {}
    manifest_ids = {u.id for u in read_manifest(RunPaths(tmp_path / "exp").manifest("train"))}
    assert flacs[0][0].stem not in manifest_ids and flacs[0][1].stem in manifest_ids


def test_malformed_and_duplicate_transcript_lines(corpus: Path, tmp_path: Path) -> None:
    t = trans_file(chapters(corpus)[0])
    lines = t.read_text().splitlines()
    t.write_text("\n".join([*lines, lines[1], "999-1-0000 WRONG SPEAKER", ""]) + "\n")
    counts = prepare(corpus, tmp_path)["splits"]["train"]["skipped"]["counts"]
    assert counts == {"duplicate_id": 1, "bad_transcript_line": 1}


def test_missing_subset_names_it_and_lists_existing(smoke_corpus: Path, tmp_path: Path) -> None:
    subsets = {**SPLIT_SUBSETS, "dev": ("dev-clean",)}
    with pytest.raises(CorpusError) as e:
        prepare_manifests(smoke_corpus, subsets, RunPaths(tmp_path / "exp"), DataConfig())
    msg = str(e.value)
    assert str(smoke_corpus / "dev-clean") in msg
    assert all(s in msg for s in SUBSETS.values())
    with pytest.raises(CorpusError, match="does not exist"):
        prepare(tmp_path / "nowhere", tmp_path)


def _add_oov(corpus: Path) -> Path:
    t = trans_file(chapters(corpus)[0])
    lines = t.read_text().splitlines()
    utt = lines[0].split()[0]
    lines[0] = f"{utt} THE ZORBLAX WAS QWXZY"
    t.write_text("\n".join(lines) + "\n")
    return t.parent / f"{utt}.flac"


def test_oov_policy_error_lists_words_files_and_fix(corpus: Path, tmp_path: Path) -> None:
    audio = _add_oov(corpus)
    with pytest.raises(CorpusError) as e:
        prepare(corpus, tmp_path, oov_policy="error")
    msg = str(e.value)
    for needle in ("ZORBLAX", "QWXZY", str(audio.resolve()), "data.oov_policy=skip", "data.oov_policy=g2p",
                   "data.extra_lexicon"):
        assert needle in msg
    assert not RunPaths(tmp_path / "exp").manifest("train").exists()


def test_oov_policy_skip_counts(corpus: Path, tmp_path: Path) -> None:
    audio = _add_oov(corpus)
    summary = prepare(corpus, tmp_path, oov_policy="skip")
    train = summary["splits"]["train"]
    assert train["skipped"]["counts"] == {"oov": 1}
    assert train["skipped"]["examples"]["oov"] == [f"{audio.resolve()} (QWXZY ZORBLAX)"]
    assert train["utterances"] == TRAIN_UTTS - 1


def test_oov_policy_g2p_keeps_and_counts(corpus: Path, tmp_path: Path) -> None:
    audio = _add_oov(corpus)
    summary = prepare(corpus, tmp_path)  # the default policy
    train = summary["splits"]["train"]
    assert train["skipped"]["counts"] == {} and train["utterances"] == TRAIN_UTTS
    assert train["g2p_utterances"] == 1 and summary["splits"]["dev"]["g2p_utterances"] == 0
    assert summary["g2p_words"] == 2
    manifest = {u.id: u for u in read_manifest(RunPaths(tmp_path / "exp").manifest("train"))}
    assert manifest[audio.stem].text == "THE ZORBLAX WAS QWXZY"


def test_extra_lexicon_resolves_oov(corpus: Path, tmp_path: Path) -> None:
    _add_oov(corpus)
    extra = tmp_path / "extra.txt"
    extra.write_text("ZORBLAX Z AO1 R B L AE0 K S\nQWXZY K W IH1 Z IY0\n")
    summary = prepare(corpus, tmp_path, extra_lexicon=str(extra), oov_policy="error")
    assert summary["skipped_total"] == 0 and summary["splits"]["train"]["utterances"] == TRAIN_UTTS


def test_max_utts_per_split_is_deterministic(smoke_corpus: Path, tmp_path: Path) -> None:
    s1 = prepare(smoke_corpus, tmp_path / "a", max_utts_per_split=30)
    ids1 = [u.id for u in read_manifest(RunPaths(tmp_path / "a" / "exp").manifest("train"))]
    prepare(smoke_corpus, tmp_path / "b", max_utts_per_split=30)
    ids2 = [u.id for u in read_manifest(RunPaths(tmp_path / "b" / "exp").manifest("train"))]
    assert len(ids1) == 30 and ids1 == ids2
    assert len({i.split("-")[0] for i in ids1}) > 1  # a random choice, not the first speaker's
    assert s1["splits"]["train"]["usable_before_cap"] == TRAIN_UTTS
    assert s1["splits"]["dev"]["utterances"] == DEV_UTTS <= 30  # under the cap: all kept


def test_lm_text_configured(smoke_corpus: Path, tmp_path: Path) -> None:
    lm = tmp_path / "my-lm.txt"
    lm.write_text("HELLO WORLD\n")
    assert prepare(smoke_corpus, tmp_path, lm_text=str(lm))["lm_text"] == str(lm.resolve())
    with pytest.raises(CorpusError, match="data.lm_text"):
        prepare(smoke_corpus, tmp_path, lm_text=str(tmp_path / "missing.txt"))


def test_split_with_nothing_usable_is_an_error(corpus: Path, tmp_path: Path) -> None:
    for t in (corpus / "test-synth").glob("*/*/*.trans.txt"):
        t.unlink()
    with pytest.raises(CorpusError, match="test.*no usable utterances.*missing_transcript_file"):
        prepare(corpus, tmp_path)


MIN_SAMPLES = 400 + 25 * 160  # one 26-frame DNN window (20 + 1 + 5 frames), as the recipe asks


def test_unusable_audio_is_skipped_by_reason_and_named(corpus: Path, tmp_path: Path) -> None:
    """Issue 17: audio that passed the header checks but breaks features/align is caught here."""
    ch = chapters(corpus)
    flacs = [sorted(c.glob("*.flac")) for c in ch]
    silent, short, garbled, cut = flacs[0][0], flacs[1][0], flacs[2][0], flacs[3][0]
    sf.write(str(silent), np.zeros(32000, dtype=np.float32), 16000, format="FLAC")  # digital silence
    rng = np.random.default_rng(0)
    sf.write(str(short), 0.1 * rng.standard_normal(800).astype(np.float32), 16000, format="FLAC")  # 0.05 s
    data = bytearray(garbled.read_bytes())  # garbage inside the stream; header and tail intact
    mid = len(data) // 2
    data[mid : mid + 2000] = rng.integers(0, 256, 2000, dtype=np.uint8).tobytes()
    garbled.write_bytes(bytes(data))
    x, sr = sf.read(str(cut), dtype="float32")  # a WAV cut in half: its header promises every sample
    cut.unlink()
    wav = cut.with_suffix(".wav")
    sf.write(str(wav), x, sr, subtype="PCM_16")
    whole = wav.read_bytes()
    wav.write_bytes(whole[: len(whole) // 2])

    summary = prepare_manifests(corpus, SPLIT_SUBSETS, RunPaths(tmp_path / "exp"), DataConfig(),
                                min_samples=MIN_SAMPLES)
    train = summary["splits"]["train"]
    assert train["skipped"]["counts"] == {"silent_audio": 1, "too_short": 1, "unreadable_audio": 1,
                                          "truncated_audio": 1}
    ex = train["skipped"]["examples"]
    assert ex == {"silent_audio": [str(silent)], "too_short": [str(short)], "unreadable_audio": [str(garbled)],
                  "truncated_audio": [str(wav)]}
    assert train["utterances"] == TRAIN_UTTS - 4
    ids = {u.id for u in read_manifest(RunPaths(tmp_path / "exp").manifest("train"))}
    assert not ids & {silent.stem, short.stem, garbled.stem, cut.stem}
    assert summary["min_samples"] == MIN_SAMPLES


def test_clean_corpus_passes_the_full_decode_unchanged(smoke_corpus: Path, tmp_path: Path) -> None:
    a = prepare(smoke_corpus, tmp_path / "a")
    b = prepare_manifests(smoke_corpus, SPLIT_SUBSETS, RunPaths(tmp_path / "b" / "exp"), DataConfig(),
                          min_samples=MIN_SAMPLES)
    assert b["skipped_total"] == 0
    for split in SUBSETS:
        assert read_manifest(RunPaths(tmp_path / "a" / "exp").manifest(split)) == \
            read_manifest(RunPaths(tmp_path / "b" / "exp").manifest(split))
        assert a["splits"][split]["utterances"] == b["splits"][split]["utterances"]


def test_non_utf8_transcript_line_skips_its_utterance_and_names_file_and_line(corpus: Path, tmp_path: Path) -> None:
    t = trans_file(chapters(corpus)[0])
    lines = t.read_bytes().splitlines()
    utt = lines[2].split()[0].decode()
    lines[2] = lines[2].split()[0] + b" CAF\xe9 AU LAIT"  # Latin-1, not UTF-8
    t.write_bytes(b"\n".join(lines) + b"\n")
    summary = prepare(corpus, tmp_path)
    train = summary["splits"]["train"]
    assert train["skipped"]["counts"] == {"non_utf8_transcript": 1}  # not also audio_without_transcript
    (example,) = train["skipped"]["examples"]["non_utf8_transcript"]
    assert example.startswith(f"{t}:3 ") and "0xe9" in example
    assert train["utterances"] == TRAIN_UTTS - 1
    assert utt not in {u.id for u in read_manifest(RunPaths(tmp_path / "exp").manifest("train"))}


def test_flac_and_wav_with_one_id_keep_the_flac_and_count_the_wav(corpus: Path, tmp_path: Path) -> None:
    flac = sorted(chapters(corpus)[0].glob("*.flac"))[0]
    x, sr = sf.read(str(flac), dtype="float32")
    wav = flac.with_suffix(".wav")
    sf.write(str(wav), x, sr, subtype="PCM_16")
    summary = prepare(corpus, tmp_path)
    train = summary["splits"]["train"]
    assert train["skipped"]["counts"] == {"duplicate_id": 1}
    assert train["skipped"]["examples"]["duplicate_id"] == [f"{wav} (same id as {flac.name}, which is kept)"]
    assert train["utterances"] == TRAIN_UTTS
    kept = {u.id: u.audio for u in read_manifest(RunPaths(tmp_path / "exp").manifest("train"))}
    assert kept[flac.stem] == str(flac.resolve())


def test_the_reader_takes_plain_arguments_and_returns_the_manifest(smoke_corpus):
    """read_corpus knows nothing of run directories: it returns the utterances and their account."""
    from data_prep.librispeech import read_corpus

    corpus = read_corpus(smoke_corpus, SPLIT_SUBSETS, sample_rate=16000)
    assert list(corpus.splits) == ["train", "dev", "test"]
    for split, utts in corpus.splits.items():
        assert utts and corpus.summary["splits"][split]["utterances"] == len(utts)
    assert corpus.summary["corpus_root"] == str(smoke_corpus.resolve())
