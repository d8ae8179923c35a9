"""Paired comparison of two evaluations (`deepfake-detect compare`)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from deepfake_detect.pipeline.cli import main
from deepfake_detect.training.compare import compare_evaluations
from deepfake_detect.training.metrics import paired_auc_difference


def _evaluation(scores: dict[str, float], labels: dict[str, int], threshold: float = 0.5) -> dict:
    rows = [{"path": p, "label": labels[p], "group": "none" if labels[p] == 0 else "swap", "identity": p,
             "kind": "video", "score": s, "mobilenetv2_100_confident": 1 - s} for p, s in scores.items()]
    return {"threshold": threshold, "per_item": rows}


def _items(n: int = 40, seed: int = 1) -> tuple[dict[str, int], dict[str, float], dict[str, float]]:
    """Labels, scores of a detector at chance, and of one that ranks every fake above every real."""
    rng = np.random.default_rng(seed)
    labels = {f"v{k}.mp4": k % 2 for k in range(n)}
    chance = {p: float(rng.random()) for p in labels}
    perfect = {p: 0.6 + 0.3 * rng.random() if y else 0.1 + 0.3 * rng.random() for p, y in labels.items()}
    return labels, chance, perfect


def test_paired_difference_of_identical_scores_is_exactly_zero() -> None:
    labels, chance, _ = _items()
    y, s = np.array(list(labels.values())), np.array(list(chance.values()))
    got = paired_auc_difference(y, s, s)
    assert got == {"difference": 0.0, "ci95": (0.0, 0.0), "b_better": 0.0}


def test_paired_difference_finds_the_better_detector_and_its_sign() -> None:
    labels, chance, perfect = _items()
    y = np.array(list(labels.values()))
    a, b = np.array(list(chance.values())), np.array(list(perfect.values()))
    better = paired_auc_difference(y, a, b)
    assert better is not None and better["ci95"][0] > 0 and better["b_better"] > 0.99
    worse = paired_auc_difference(y, b, a)
    assert worse is not None and worse["ci95"][1] < 0 and worse["difference"] == pytest.approx(-better["difference"])
    assert paired_auc_difference(np.zeros(5), a[:5], b[:5]) is None  # one class: no AUC


def test_compare_matches_items_by_path_and_reads_the_chosen_columns() -> None:
    labels, chance, perfect = _items()
    a = _evaluation(chance, labels)
    b = _evaluation({**perfect, "only-in-b.mp4": 0.9}, {**labels, "only-in-b.mp4": 1})
    b["per_item"].insert(0, b["per_item"].pop())  # order must not matter
    result = compare_evaluations(a, b)
    assert result["matched_items"] == 40 and result["only_in_a"] == 0 and result["only_in_b"] == 1
    assert set(result["slices"]) == {"all items", "videos", "swap (video)"}  # no photos: that slice is left out
    assert result["slices"]["all items"]["ci95"][0] > 0
    assert result["reals_flagged_fake"]["b"] == 0.0
    # a member column: B's MobileNetV2 score is 1 - score here, so it ranks every fake last
    inverted = compare_evaluations(a, b, column_b="mobilenetv2_100_confident")
    assert inverted["slices"]["all items"]["ci95"][1] < 0


def test_compare_refuses_evaluations_that_disagree_on_labels_or_share_nothing() -> None:
    labels, chance, perfect = _items(6)
    flipped = {p: 1 - y for p, y in labels.items()}
    with pytest.raises(ValueError, match="labelled"):
        compare_evaluations(_evaluation(chance, labels), _evaluation(perfect, flipped))
    with pytest.raises(ValueError, match="no scored item in common"):
        compare_evaluations(_evaluation(chance, labels), _evaluation(chance, labels), column_a="no_such_column")


def test_compare_command_prints_the_table_and_fails_in_one_line(tmp_path) -> None:
    labels, chance, perfect = _items()
    (tmp_path / "a.json").write_text(json.dumps(_evaluation(chance, labels)))
    (tmp_path / "b.json").write_text(json.dumps(_evaluation(perfect, labels)))
    runner = CliRunner()
    ok = runner.invoke(main, ["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")])
    assert ok.exit_code == 0, ok.output
    assert "| all items | 20 / 20 |" in ok.output and "(B better)" in ok.output
    as_json = runner.invoke(main, ["compare", "--json", str(tmp_path / "a.json"), str(tmp_path / "b.json")])
    assert json.loads(as_json.output)["matched_items"] == 40
    (tmp_path / "bad.json").write_text("{not json")
    bad = runner.invoke(main, ["compare", str(tmp_path / "a.json"), str(tmp_path / "bad.json")])
    assert bad.exit_code != 0 and "cannot compare" in bad.output and "Traceback" not in bad.output


def test_compare_matches_paths_recorded_from_another_folder() -> None:
    labels, chance, perfect = _items(10)
    older = _evaluation({f"../data/dev/{p}": s for p, s in chance.items()}, {f"../data/dev/{p}": y for p, y in labels.items()})
    newer = _evaluation({f"dev/{p}": s for p, s in perfect.items()}, {f"dev/{p}": y for p, y in labels.items()})
    assert compare_evaluations(older, newer)["matched_items"] == 10
    assert compare_evaluations(newer, older)["matched_items"] == 10


def test_sources_bootstrap_draws_whole_families_so_one_familys_gain_is_not_taken_for_a_general_one() -> None:
    # 4 fake families of 10 clips each against 40 real people; B differs from A only on family 0, whose
    # clips it puts above every real: the items bootstrap sees 10 independent wins, the sources
    # bootstrap one family that a resample may or may not draw
    rng = np.random.default_rng(3)
    rows_a, rows_b = [], []
    for k in range(80):
        fake = k < 40
        family = f"gen{k // 10}" if fake else "none"
        score = float(rng.random())
        row = {"path": f"v{k}.mp4", "label": int(fake), "group": family, "identity": f"person{k}", "kind": "video"}
        rows_a.append({**row, "score": score})
        rows_b.append({**row, "score": 0.99 if family == "gen0" else score})
    a, b = {"threshold": 0.5, "per_item": rows_a}, {"threshold": 0.5, "per_item": rows_b}
    items = compare_evaluations(a, b)["slices"]["all items"]
    sources = compare_evaluations(a, b, resample="sources")
    whole = sources["slices"]["all items"]
    assert sources["resample"] == "sources" and whole["difference"] == items["difference"] > 0
    assert items["ci95"][0] > 0                     # items: "B better"
    assert whole["ci95"][0] <= 0 < whole["ci95"][1]  # sources: family 0 is one draw of four, not ten of forty
    assert whole["ci95"][1] - whole["ci95"][0] > items["ci95"][1] - items["ci95"][0]


def test_compare_command_resamples_sources_when_asked(tmp_path) -> None:
    labels, chance, perfect = _items()
    paths = []
    for name, scores in (("a", chance), ("b", perfect)):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(_evaluation(scores, labels)))
        paths.append(str(path))
    result = CliRunner().invoke(main, ["compare", *paths, "--resample", "sources"])
    assert result.exit_code == 0, result.output
    assert "resampling sources" in result.output and "| all items | 20 / 20 |" in result.output
