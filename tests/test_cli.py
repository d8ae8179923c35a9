"""End to end through the `deepfake-detect` command: verdicts, report schema, exit codes, bad input."""
from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner

from deepfake_detect.pipeline.cli import main
from deepfake_detect.pipeline.core.report import REPORT_SCHEMA, AnalysisReport, InputInfo, report_to_dict


def run(*args: str) -> click.testing.Result:  # noqa: F821
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def analyze(weights_dir: Path, *paths, extra=()) -> click.testing.Result:  # noqa: F821
    return run("analyze", *paths, "--weights", weights_dir, "--device", "cpu", "--frames", 8, "--no-render", *extra)


def _sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_one_face_video_report(weights_dir, clips, tmp_path):
    result = analyze(weights_dir, clips["one"], extra=("--out", tmp_path))
    report = json.loads((tmp_path / "one_face.mp4.json").read_text())
    jsonschema.validate(report, REPORT_SCHEMA)
    assert report["verdict"] in ("fake", "real", "inconclusive")
    assert result.exit_code == {"fake": 1, "real": 0, "inconclusive": 3}[report["verdict"]]
    assert report["frames_analysed"] == 8 and report["frames_with_faces"] == 8
    assert len([t for t in report["tracks"] if t["counted"]]) == 1
    assert report["input"]["sha256"] == _sha(clips["one"]) and report["input"]["has_audio"] is True
    assert report["model"]["members"] == ["mobilenetv2_100", "tf_efficientnetv2_b0"]
    assert set(report["tracks"][0]["faces"][0]["member_scores"]) == {"mobilenetv2_100", "tf_efficientnetv2_b0"}
    assert 1 <= len(report["keyframes"]) <= 3
    csv_lines = (tmp_path / "results.csv").read_text().splitlines()
    assert csv_lines[0].startswith("time,path,verdict") and len(csv_lines) == 2


# The keys the hand-kept schema required before REPORT_SCHEMA was generated from the dataclasses.
_REQUIRED = ["schema_version", "input", "verdict", "score", "threshold", "fake_percentage", "frames_analysed",
             "tracks", "keyframes", "model", "timings", "errors", "outputs"]
_FACE = {"frame_index": 0, "time_s": 0.0, "track_id": 0, "box": [0, 0, 1, 1], "confidence": 1.0, "score": 0.5,
         "member_scores": {"m": 0.5}, "sharpness": 80.0}
_TRACK = {"id": 0, "score": 0.5, "verdict": "real", "counted": True, "faces": [_FACE]}
_BAD_VALUES = {  # one wrong value per case: (key, value)
    "unknown verdict": ("verdict", "maybe"), "null verdict": ("verdict", None), "other version": ("schema_version", "0.9"),
    "negative frame count": ("frames_analysed", -1), "score as text": ("score", "0.5"), "errors not text": ("errors", [1]),
    "model incomplete": ("model", {"name": "m", "version": "1"}), "kind unknown": ("input", {"path": "x.mp4", "kind": "audio"}),
    "track verdict unknown": ("tracks", [{**_TRACK, "verdict": "maybe"}]),
    "face score above 1": ("tracks", [{**_TRACK, "faces": [{**_FACE, "score": 1.5}]}]),
    "box of 3 numbers": ("tracks", [{**_TRACK, "faces": [{**_FACE, "box": [0, 0, 1]}]}]),
    "negative sharpness": ("tracks", [{**_TRACK, "faces": [{**_FACE, "sharpness": -1.0}]}]),
}


def _error_report() -> dict:
    return report_to_dict(AnalysisReport(input=InputInfo(path="x.mp4"), verdict="error", errors=["cannot read"]))


def test_schema_accepts_an_error_report():
    jsonschema.validate(_error_report(), REPORT_SCHEMA)  # nulls and empty lists where nothing was analysed
    jsonschema.validate({**_error_report(), "tracks": [_TRACK]}, REPORT_SCHEMA)  # the cases below change one thing


@pytest.mark.parametrize("key", _REQUIRED)
def test_schema_rejects_a_report_without_a_required_key(key):
    report = _error_report()
    del report[key]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(report, REPORT_SCHEMA)


@pytest.mark.parametrize("case", _BAD_VALUES)
def test_schema_rejects_a_wrong_value(case):
    key, value = _BAD_VALUES[case]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**_error_report(), key: value}, REPORT_SCHEMA)


def test_two_people_get_two_tracks(weights_dir, clips):
    result = analyze(weights_dir, clips["two"], extra=("--json",))
    report = json.loads(result.stdout)
    counted = [t for t in report["tracks"] if t["counted"]]
    assert len(counted) == 2
    # each track stays on its own side of the frame: the two people are never mixed up
    centres = [[(f["box"][0] + f["box"][2]) / 2 for f in t["faces"]] for t in counted]
    left, right = sorted(centres, key=lambda c: c[0])
    assert max(left) < min(right)


def test_no_face_video_and_photo(weights_dir, clips):
    result = analyze(weights_dir, clips["none"], extra=("--json",))
    assert json.loads(result.stdout)["verdict"] == "no_face" and result.exit_code == 3
    jsonschema.validate(json.loads(result.stdout), REPORT_SCHEMA)
    photo = json.loads(analyze(weights_dir, clips["photo"], extra=("--json",)).stdout)
    jsonschema.validate(photo, REPORT_SCHEMA)
    assert photo["input"]["kind"] == "image" and photo["frames_analysed"] == 1 and photo["frames_with_faces"] == 1


def test_bad_inputs_fail_alone_with_one_line_each(weights_dir, clips, tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n" * 10)
    truncated = tmp_path / "cut.mp4"
    truncated.write_bytes(Path(clips["one"]).read_bytes()[:2000])
    weird = tmp_path / "ünï cødé [1] ' $x.mp4"
    weird.write_bytes(Path(clips["one"]).read_bytes())
    no_media = tmp_path / "no_media"
    no_media.mkdir()
    (no_media / "readme.txt").write_text("x")
    inputs = [empty, text, truncated, tmp_path / "missing.mp4", no_media, weird]
    before = {p: _sha(p) for p in inputs if p.is_file()}
    out = tmp_path / "out"
    result = analyze(weights_dir, *inputs, extra=("--out", out))
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 5  # every bad input once; the good one with the odd name is analysed
    assert result.exit_code in (1, 2)  # 1 only if the random detector calls the good clip fake
    reports = {json.loads(p.read_text())["input"]["path"]: json.loads(p.read_text()) for p in out.glob("*.json")}
    for report in reports.values():  # error reports (no model output, nulls) follow the schema too
        jsonschema.validate(report, REPORT_SCHEMA)
    assert reports[str(weird)]["verdict"] != "error"
    assert reports[str(empty)]["errors"] == ["file is empty (0 bytes)"]
    assert reports[str(text)]["errors"] == ["not a media file: the content is text"]
    assert reports[str(truncated)]["verdict"] == "error"
    assert before == {p: _sha(p) for p in before}  # inputs are never modified


def test_exit_code_2_when_an_input_fails_and_none_is_fake(weights_dir, clips, tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    result = analyze(weights_dir, clips["none"], empty)
    assert result.exit_code == 2
    assert "no_face" in result.stdout and "file is empty" in result.stdout


def test_glob_and_folder_inputs(weights_dir, clips):
    folder = Path(clips["photo"]).parent
    result = analyze(weights_dir, str(folder / "*.jpg"), extra=("--json",))
    assert json.loads(result.stdout)["input"]["path"].endswith("photo.jpg")
    result = analyze(weights_dir, folder, extra=("--frames", 2))
    assert result.stdout.count(str(folder)) == 4


def test_refuses_without_trained_weights(tmp_path, clips):
    result = run("analyze", clips["photo"], "--weights", tmp_path / "none")
    assert result.exit_code == 2 and result.stderr.startswith("error: no detector config")
    assert "Traceback" not in result.output


def test_info_shows_model_and_checksum(weights_dir):
    result = run("info", "--weights", weights_dir)
    assert result.exit_code == 0
    assert "mobilenetv2_100, tf_efficientnetv2_b0" in result.stdout and "[ok]" in result.stdout


@pytest.mark.parametrize("option", [("--frames", "0"), ("--frames", "4", "--fps", "2")])
def test_bad_options_are_one_line_errors(weights_dir, clips, option):
    result = run("analyze", clips["photo"], "--weights", weights_dir, *option)
    assert result.exit_code == 2 and result.stderr.count("\n") == 1


def test_bad_setting_fails_before_the_model_loads(clips, tmp_path):
    # no detector at this path: a setting error must be reported first, without loading anything
    result = CliRunner().invoke(main, ["analyze", str(clips["photo"]), "--weights", str(tmp_path / "none"),
                                       "--set", "aggregate.track_strategy=foo"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "error: setting aggregate.track_strategy: Input should be 'confident', 'mean' or 'median', got 'foo'"]


def test_inputs_with_the_same_name_keep_their_own_outputs(weights_dir, clips, tmp_path):
    import shutil

    for sub in ("a", "b"):
        (tmp_path / "in" / sub).mkdir(parents=True)
        shutil.copy2(clips["photo"], tmp_path / "in" / sub / "p.jpg")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["analyze", str(tmp_path / "in" / "a" / "p.jpg"), str(tmp_path / "in" / "b" / "p.jpg"),
                                       "--weights", str(weights_dir), "--out", str(out), "--render"])
    assert result.exit_code in (0, 1, 3), result.output
    first, second = json.loads((out / "p.jpg.json").read_text()), json.loads((out / "p.jpg.2.json").read_text())
    assert first["input"]["path"].endswith("a/p.jpg") and second["input"]["path"].endswith("b/p.jpg")
    # each input's annotated image and keyframes are its own files
    assert first["outputs"]["annotated_image"] != second["outputs"]["annotated_image"]
    assert Path(second["outputs"]["annotated_image"]).parent == out / "p.jpg.2"
    with open(out / "results.csv", newline="") as fh:
        reports = [row["report"] for row in csv.DictReader(fh)]
    assert reports == [str(out / "p.jpg.json"), str(out / "p.jpg.2.json")]
