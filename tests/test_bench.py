"""`deepfake-detect bench`: the JSON it prints for scripts, and the helpers that time processes."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from deepfake_detect.pipeline.bench.backends import compare_reports
from deepfake_detect.pipeline.bench.measure import BenchError
from deepfake_detect.pipeline.bench.processes import cli_command, time_process, time_runs, two_at_once
from deepfake_detect.pipeline.core.config import load_config
from deepfake_detect.pipeline.core.report import AnalysisReport, InputInfo
from deepfake_detect.pipeline.core.samples import make_sample_video
from deepfake_detect.stages.aggregate import FaceScore, TrackSummary

FRAMES = 4


def test_bench_prints_its_figures_as_one_json_object(weights_dir, tmp_path):
    json_out = tmp_path / "bench.json"
    # a real process, so stdout is a real file: --json must leave nothing else on it. One thread:
    # two threads that wait for each other crawl when another job shares the cores.
    proc = subprocess.run(
        [sys.executable, "-m", "deepfake_detect.pipeline", "bench", "--weights", str(weights_dir), "--device", "cpu",
         "--threads", "1", "--seconds", "2", "--size", "320x180", "--hd-seconds", "1", "--hd-size", "384x216",
         "--frames", str(FRAMES), "--long-minutes", "0", "--no-render", "--no-cold", "--no-concurrent", "--json",
         "--json-out", str(json_out)],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    figures = json.loads(proc.stdout)  # the whole of stdout is the one object
    assert json.loads(json_out.read_text()) == figures
    assert "naive / pipeline" in proc.stderr and "no-loss check" in proc.stderr  # the tables went to stderr

    assert figures["device"] == "cpu" and figures["backend"] == "onnx" and figures["frames"] == FRAMES
    assert figures["threads"] == {"compute": 1, "decode": 1}
    assert figures["cold_cli"] is None and figures["concurrent"] is None and figures["skipped"] == {}
    assert set(figures["load_average"]) == {"start", "end"}

    rows = {row["kind"]: row for row in figures["rows"]}
    assert set(rows) == {"base", "hd"}
    assert rows["base"]["size"] == "320x180" and rows["hd"]["size"] == "384x216"
    for row in rows.values():
        assert row["frames_sampled"] == row["frames_analysed"] == FRAMES
        assert row["decode_only_s"] > 0 and row["analyze_s"] > 0 and row["frames_per_s"] > 0
        assert row["analyze_over_decode"] == pytest.approx(row["analyze_s"] / row["decode_only_s"])
        assert row["peak_rss_analyze_mib"] > 100  # the models are in memory
        assert {"decode_s", "detect_s", "classify_s"} <= set(row["stage_s"])
        assert "render_fps" not in row  # --no-render

    naive = figures["naive"]
    assert naive["frames"] == naive["pipeline_frames"] == FRAMES
    assert naive["faces"] >= FRAMES - 1  # one face in every frame of the clip
    assert naive["naive_s"] > 0 and naive["pipeline_s"] == rows["base"]["analyze_s"]
    assert naive["ratio"] == pytest.approx(naive["naive_s"] / naive["pipeline_s"])

    check = figures["no_loss"]
    assert [c["clip"] for c in check["clips"]] == [rows["base"]["clip"], rows["hd"]["clip"]]
    for clip in check["clips"]:
        assert clip["faces"]["onnx"] == clip["faces"]["torch"] == clip["matched_faces"] >= FRAMES - 1
        assert clip["tracks"]["onnx"] == clip["tracks"]["torch"] >= 1
        assert clip["unmatched_faces"] == 0 and clip["same_verdict"]
        assert isinstance(clip["max_face_score_diff"], float) and clip["max_face_score_diff"] <= 1e-3
        assert isinstance(clip["video_score_diff"], float) and clip["video_score_diff"] <= 1e-3
        assert clip["max_box_diff_px"] <= 0.05
        assert clip["analyze_s"]["onnx"] > 0 and clip["analyze_s"]["torch"] > 0
        assert clip["onnx_speedup"] == pytest.approx(clip["analyze_s"]["torch"] / clip["analyze_s"]["onnx"])
    assert check["max_face_score_diff"] <= 1e-3


def _report(faces: list[tuple[int, list[float], float]], score: float) -> AnalysisReport:
    track = TrackSummary(id=0, score=score, verdict="real", counted=True, faces=[
        FaceScore(frame_index=i, time_s=i / 30, track_id=0, box=box, confidence=1.0, score=s, member_scores={})
        for i, box, s in faces])
    return AnalysisReport(input=InputInfo(path="x"), verdict="real", score=score, tracks=[track])


def test_faces_are_matched_by_frame_and_box_not_by_order():
    left, right = [10.0, 10, 50, 50], [200.0, 10, 240, 50]
    a = _report([(0, left, 0.2), (0, right, 0.9), (3, left, 0.5)], 0.4)
    b = _report([(0, right, 0.9), (0, [10.5, 10, 50, 50], 0.25), (5, left, 0.5)], 0.41)
    diff = compare_reports(a, b)
    assert diff["matched_faces"] == 2 and diff["unmatched_faces"] == 2  # frames 3 and 5 have no partner
    assert diff["max_face_score_diff"] == pytest.approx(0.05)
    assert diff["max_box_diff_px"] == pytest.approx(0.5)
    assert diff["video_score_diff"] == pytest.approx(0.01)


def test_cold_process_timing():
    figures = time_runs([*cli_command(), "--help"], runs=2)
    assert len(figures["runs_s"]) == 2 and 0 < figures["min_s"] <= figures["median_s"]
    with pytest.raises(BenchError, match="exited with 2"):
        time_process([*cli_command(), "no-such-command"])


def test_two_analyses_at_once(weights_dir, tmp_path):
    clip = make_sample_video(tmp_path / "clip.mp4", seconds=1.0, size=(320, 180), faces=1)
    config = load_config(None, {"weights": str(weights_dir), "device": "cpu", "sampling.value": FRAMES})
    figures = two_at_once(config, Path(clip))
    assert figures["alone"]["processes"] == 1 and figures["both"]["processes"] == 2
    assert figures["both"]["threads"]["compute"] <= figures["alone"]["threads"]["compute"]
    assert figures["alone"]["frames_analysed"] == [FRAMES] and figures["both"]["frames_analysed"] == [FRAMES, FRAMES]
    assert figures["alone"]["wall_s"] > 0 and len(figures["both"]["each_s"]) == 2
    assert figures["ratio"] == pytest.approx(figures["both"]["wall_s"] / figures["alone"]["wall_s"])
    assert figures["within_target"] == (figures["ratio"] <= figures["target"])


def test_architectures_row_times_each_member_on_both_backends():
    from deepfake_detect.pipeline.bench.architectures import architectures_bench
    from deepfake_detect.pipeline.bench.tables import architectures_lines

    said = []
    result = architectures_bench(1, said.append, crops=2, only=("this project: mobilenetv2_100", "icpr2020"))
    rows = {row["architecture"]: row for row in result["rows"]}
    assert set(rows) == {"this project: mobilenetv2_100", "icpr2020: EfficientNetAutoAttB4"}
    for row in rows.values():
        assert row["torch_crops_per_s"] > 0 and row["onnx_crops_per_s"] > 0 and row["max_prob_diff"] < 1e-3
    assert rows["icpr2020: EfficientNetAutoAttB4"]["params_m"] > 3 * rows["this project: mobilenetv2_100"]["params_m"]
    assert "icpr2020: EfficientNetAutoAttB4" in architectures_lines(result) and len(said) == 2
