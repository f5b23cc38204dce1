"""The bootstrap over test utterances: intervals, paired tests, ratios, and the report's use of them."""

from __future__ import annotations

import numpy as np
import pytest

from asr_kd.decoding.stats import Bootstrap, UttCounts, interval, paired_test, ratio_of_gains


def counts(errors, words, hits=None, frames=None, utts=None) -> UttCounts:
    n = len(errors)
    return UttCounts(tuple(utts or (f"u{i:03d}" for i in range(n))), np.asarray(errors, float), np.asarray(words, float),
                     np.asarray(hits if hits is not None else [0] * n, float),
                     np.asarray(frames if frames is not None else [0] * n, float))


def test_interval_contains_the_point_and_shrinks_with_more_utterances():
    rng = np.random.default_rng(1)
    widths = []
    for n in (50, 800):
        words = rng.integers(5, 15, n)
        errors = rng.binomial(words, 0.1)
        c = counts(errors, words)
        boot = Bootstrap(c.utts, num_resamples=500, seed=0)
        low, high = interval(boot.wer(c))
        point = errors.sum() / words.sum()
        assert low <= point <= high
        widths.append(high - low)
    assert widths[1] < widths[0] / 2  # ~ 1 / sqrt(n)


def test_paired_test_separates_a_consistent_difference_from_noise():
    rng = np.random.default_rng(2)
    n = 200
    words = rng.integers(5, 15, n)
    a = rng.binomial(words, 0.10) + 1  # at least one error, so -1 stays >= 0
    better = a - (rng.random(n) < 0.5)  # one error fewer on half the utterances
    noise = a + rng.integers(-1, 2, n)  # as often worse as better
    boot = Bootstrap([f"u{i}" for i in range(n)], num_resamples=1000, seed=0)
    wa, wb, wn = (boot.wer(counts(e, words)) for e in (a, better, noise))
    sig = paired_test(wb, wa, (better.sum() - a.sum()) / words.sum())
    assert sig["p_value"] < 0.01 and sig["ci"][1] < 0
    null = paired_test(wn, wa, (noise.sum() - a.sum()) / words.sum())
    assert null["p_value"] > 0.05 and null["ci"][0] < 0 < null["ci"][1]


def test_ratio_of_gains_and_degenerate_denominators():
    num, den = np.array([1.0, 2.0, 1.0, 1.0]), np.array([2.0, 2.0, 0.0, -1.0])
    r = ratio_of_gains(num, den)
    assert r[0] == 0.5 and r[1] == 1.0 and np.isnan(r[2]) and np.isnan(r[3])
    assert interval(np.array([np.nan, np.nan, 0.3])) is None  # mostly undefined: no interval


def test_counts_are_aligned_by_utterance_id():
    c = counts([1, 2, 3], [10, 10, 10], utts=["b", "a", "c"])
    r = c.reorder(["a", "b", "c"])
    assert r.errors.tolist() == [2, 1, 3]
    with pytest.raises(ValueError, match="lack"):
        c.reorder(["a", "z"])
    assert UttCounts.from_json(c.to_json()).utts == c.utts
