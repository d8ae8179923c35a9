"""`detectors threshold`: a detector's threshold fitted on real material at a chosen false-alarm rate."""
from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from deepfake_detect.pipeline.cli import main
from deepfake_detect.stages.ensemble import load_detector
from deepfake_detect.training.false_alarm_threshold import fit_threshold_on_reals


def test_only_the_threshold_changes_and_the_fit_is_recorded(weights_dir, tmp_path):
    scores = list(np.linspace(0.2, 0.7, 10))
    fit = fit_threshold_on_reals(weights_dir, tmp_path / "out", scores, 0.2, "my reals")
    before, after = load_detector(weights_dir), load_detector(tmp_path / "out")   # sha256 checked at load
    assert after.config.threshold == fit["threshold"]
    assert 0 < fit["threshold"] - scores[7] < 1e-12     # just above the highest real that must stay below it
    assert sum(s >= fit["threshold"] for s in scores) == 2 and fit["reals_at_or_above"] == 0.2
    assert after.config.sha256 == before.config.sha256 and after.config.calibration == before.config.calibration
    recorded = after.config.training["threshold_fit"]
    assert recorded["data"] == "my reals" and recorded["real_items"] == 10
    assert recorded["threshold_before"] == before.config.threshold


def test_the_command_fits_on_a_folder_of_reals_and_leaves_it_untouched(weights_dir, clips, tmp_path):
    reals = tmp_path / "my reals"
    reals.mkdir()
    for name in ("one", "photo", "none"):
        shutil.copy2(clips[name], reals / clips[name].name)
    digest = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in reals.iterdir()}
    result = CliRunner().invoke(main, ["detectors", "threshold", str(weights_dir), "--reals", str(reals),
                                       "--false-alarms", "0.5", "--out", str(tmp_path / "fitted"), "--frames", "4"])
    assert result.exit_code == 0, result.output
    assert "0 unreadable, 1 without a face" in result.output and "fitted on 2 real items" in result.output   # the warning
    config = json.loads((tmp_path / "fitted" / "detector.json").read_text())
    assert config["training"]["threshold_fit"]["real_items"] == 2
    assert config["training"]["threshold_fit"]["reals_at_or_above"] <= 0.5
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in reals.iterdir()} == digest
    info = CliRunner().invoke(main, ["info", "--weights", str(tmp_path / "fitted")])
    assert info.exit_code == 0
    assert "threshold fitted on 2 real items of my reals (sampling count 4) at 50 % false alarms" in info.output


def test_reals_of_sources_the_detector_trained_on_can_be_left_out(weights_dir, clips, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for name, copy in (("one", "a"), ("photo", "b"), ("one", "c")):
        shutil.copy2(clips[name], data / f"{copy}{clips[name].suffix}")
    header = "path\tsplit\tlabel\tidentity\tsource_repo\n"
    (data / "MANIFEST.tsv").write_text(header + "a.mp4\ttrain\treal\tp1\tseen/repo\n"
                                       f"b{clips['photo'].suffix}\ttrain\treal\tp2\tnew/repo\n"
                                       "c.mp4\ttrain\treal\tp3\tother/repo\n")
    (tmp_path / "trained.tsv").write_text(header + "x.mp4\ttrain\tfake\tp9\tseen/repo\n")
    result = CliRunner().invoke(main, ["detectors", "threshold", str(weights_dir), "--reals", str(data / "MANIFEST.tsv"),
                                       "--exclude-sources-of", str(tmp_path / "trained.tsv"), "--false-alarms", "0.5",
                                       "--out", str(tmp_path / "fitted"), "--frames", "4"])
    assert result.exit_code == 0, result.output
    assert "of 2 real items" in result.output and "1 of sources it trained on left out" in result.output
    fit = json.loads((tmp_path / "fitted" / "detector.json").read_text())["training"]["threshold_fit"]
    assert fit["real_items"] == 2 and "less the sources of" in fit["data"]
    assert set(fit["by_source"]) == {"new/repo", "other/repo"} and "  other/repo: " in result.output


def test_each_source_s_share_is_recorded_beside_the_pooled_rate(weights_dir, tmp_path):
    scores = [0.1, 0.2, 0.3, 0.9, 0.95, 0.4]
    fit = fit_threshold_on_reals(weights_dir, tmp_path / "out", scores, 2 / 6, "two sources",
                                 ["a", "a", "a", "b", "b", "b"])
    assert fit["by_source"] == {"a": {"items": 3, "at_or_above": 0.0}, "b": {"items": 3, "at_or_above": 2 / 3}}
    assert "by_source" not in fit_threshold_on_reals(weights_dir, tmp_path / "one", scores, 0.5, "one", ["a"] * 6)
    unnamed = fit_threshold_on_reals(weights_dir, tmp_path / "unnamed", scores, 0.5, "", ["a"] * 3 + [""] * 3)
    assert set(unnamed["by_source"]) == {"a", "(no source)"}
    with pytest.raises(ValueError, match="5 sources for 6 real scores"):
        fit_threshold_on_reals(weights_dir, tmp_path / "short", scores, 0.5, "", ["a"] * 5)


def test_bad_requests_fail_before_any_model_loads(weights_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    runner = CliRunner()
    same = runner.invoke(main, ["detectors", "threshold", str(weights_dir), "--reals", str(tmp_path / "empty"),
                                "--out", str(weights_dir)])
    assert same.exit_code == 2 and "already holds a detector" in same.output
    empty = runner.invoke(main, ["detectors", "threshold", str(weights_dir), "--reals", str(tmp_path / "empty"),
                                 "--out", str(tmp_path / "x")])
    assert empty.exit_code == 2 and "no real items" in empty.output and not (tmp_path / "x").exists()
    rate = runner.invoke(main, ["detectors", "threshold", str(weights_dir), "--reals", str(tmp_path / "empty"),
                                "--false-alarms", "0.9", "--out", str(tmp_path / "x")])
    assert rate.exit_code == 2 and "false-alarms" in rate.output
    inside = runner.invoke(main, ["detectors", "threshold", str(weights_dir), "--reals", str(tmp_path),
                                  "--out", str(tmp_path / "empty" / "fitted")])
    assert inside.exit_code == 2 and "inside --reals" in inside.output and not (tmp_path / "empty" / "fitted").exists()
    (tmp_path / "clip.mp4").write_bytes(b"not really")
    one_file = runner.invoke(main, ["detectors", "threshold", str(weights_dir), "--reals", str(tmp_path / "clip.mp4"),
                                    "--out", str(tmp_path / "x")])
    assert one_file.exit_code == 2 and "not one media file" in one_file.output
    (tmp_path / "short.tsv").write_text("path\tsplit\tlabel\nreal/a.mp4\tdev\n")   # its row lacks the label
    short = runner.invoke(main, ["detectors", "threshold", str(weights_dir), "--reals", str(tmp_path / "short.tsv"),
                                 "--out", str(tmp_path / "x")])
    assert short.exit_code == 2 and "line 2 has no label column" in short.output
    assert "Traceback" not in one_file.output + short.output + inside.output


def test_bad_exclude_manifests_fail_before_any_model_loads(weights_dir, tmp_path):
    (tmp_path / "reals.tsv").write_text("path\tsplit\tlabel\tidentity\tsource_repo\na.mp4\ttrain\treal\tp1\tr1\n")
    (tmp_path / "no sources.tsv").write_text("path\tlabel\nx.mp4\tfake\n")
    (tmp_path / "same source.tsv").write_text("path\tlabel\tsource_repo\nx.mp4\tfake\tr1\n")
    (tmp_path / "huge.tsv").write_text("path\tlabel\n" + "x" * 200_000 + "\treal\n")   # past csv's field limit
    runner = CliRunner()

    def fit(exclude: str):
        return runner.invoke(main, ["detectors", "threshold", str(weights_dir), "--reals", str(tmp_path / "reals.tsv"),
                                    "--exclude-sources-of", str(tmp_path / exclude), "--out", str(tmp_path / "x")])
    nothing, everything, huge = fit("no sources.tsv"), fit("same source.tsv"), fit("huge.tsv")
    assert nothing.exit_code == 2 and "names no sources" in nothing.output
    assert everything.exit_code == 2 and "all from sources --exclude-sources-of" in everything.output
    assert huge.exit_code == 2 and "not a manifest" in huge.output
    assert "Traceback" not in nothing.output + everything.output + huge.output and not (tmp_path / "x").exists()


def test_reals_that_all_score_one_cannot_reach_a_rate(weights_dir, tmp_path):
    with pytest.raises(ValueError, match="10 of 10 real items score 1.0"):
        fit_threshold_on_reals(weights_dir, tmp_path / "out", [1.0] * 10, 0.1, "saturated")
    assert not (tmp_path / "out").exists()

