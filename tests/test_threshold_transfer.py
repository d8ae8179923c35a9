"""The leave-one-real-source-out threshold study (training/threshold_transfer.py) on made-up scores."""
import numpy as np
import pytest

from deepfake_detect.training.false_alarm_threshold import rate_threshold
from deepfake_detect.training.threshold_transfer import leave_one_source_out, transfer_report


def test_rate_threshold_is_the_lowest_with_at_most_the_rate_at_or_above():
    scores = np.linspace(0.0, 1.0, 101)          # 101 distinct scores
    t = rate_threshold(scores, 0.15)
    assert np.mean(scores >= t) <= 0.15
    assert np.mean(scores >= np.nextafter(t, -np.inf) - 1e-9) > 0.15   # any lower one flags more
    assert rate_threshold(np.array([0.3, 0.3, 0.3]), 0.15) > 0.3       # ties: none of them may be flagged
    assert np.sum(np.arange(100) >= rate_threshold(np.arange(100), 0.29)) == 29   # 0.29 x 100 is 29, not 28


def test_held_out_sources_that_score_alike_keep_the_rate_and_shifted_ones_do_not():
    rng = np.random.default_rng(0)
    alike = rng.uniform(size=3000)
    sources = [f"s{i % 3}" for i in range(3000)]
    assert leave_one_source_out(alike, sources)["rate"] == pytest.approx(0.15, abs=0.02)
    low, high = np.linspace(0, 0.5, 50), np.linspace(0.5001, 1, 50)   # source b scores above all of a
    result = leave_one_source_out(np.concatenate([low, high]), ["a"] * 50 + ["b"] * 50)
    assert result["by_source"]["b"]["flagged"] == 50 and result["by_source"]["a"]["flagged"] == 0
    assert result["rate"] == 0.5
    with pytest.raises(ValueError, match="two sources"):
        leave_one_source_out(low, ["a"] * 50)


def test_transfer_report_fits_on_reals_only_and_keeps_kinds_apart():
    per_item = ([{"path": f"r{i}", "label": 0, "kind": "video", "score": i / 20} for i in range(20)]
                + [{"path": f"f{i}", "label": 1, "kind": "video", "score": 0.9 + i / 100} for i in range(5)]
                + [{"path": "p", "label": 0, "kind": "image", "score": 0.99},
                   {"path": "x", "label": 1, "kind": "video", "score": None}])   # no face: not scored
    source_of = {f"r{i}": f"src{i % 2}" for i in range(20)} | {"p": "photos"}
    rep = transfer_report(per_item, source_of, own_threshold=0.5, kinds=("video",))
    assert rep["held_out_false_alarms"]["items"] == 20                 # the photo is not a video
    # the lowest threshold with 3 of 20 reals (0.85, 0.9, 0.95) at or above it: just above 0.80
    assert 0.80 < rep["threshold_on_all_reals"] < 0.80 + 1e-9
    assert rep["fakes_flagged_at_it"] == 1.0 and rep["reals_flagged_at_own"] == 0.5
