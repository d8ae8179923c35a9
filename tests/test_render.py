"""Annotated video, annotated photo and keyframe images, end to end through the Analyzer."""
from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import cv2
import imageio_ffmpeg
import numpy as np
import pytest
import torch

from deepfake_detect.pipeline.core.config import AnalysisConfig, RenderSettings
from deepfake_detect.pipeline.core.outputs import AnnotatedMediaWriter, KeyframeImageWriter, build_output_writers
from deepfake_detect.pipeline.core.runner import Analyzer
from deepfake_detect.pipeline.core.samples import make_sample_photo, make_sample_video
from deepfake_detect.stages.decode import Sampling, open_media
from deepfake_detect.stages.draw import FaceSample, OverlayStyle, blend_heatmap, verdict_banner
from deepfake_detect.stages.ensemble import create_detector, save_detector
from deepfake_detect.stages.explain import Explainer
from deepfake_detect.stages.render import TrackPath, render_annotated_video

FPS = 25.0
SIZE = (480, 270)


def _meta(path: Path) -> dict:
    gen = imageio_ffmpeg.read_frames(str(path))
    try:
        return next(gen)
    finally:
        gen.close()


def _frame(path: Path, index: int) -> np.ndarray:
    gen = imageio_ffmpeg.read_frames(str(path))
    try:
        w, h = next(gen)["size"]
        for i, raw in enumerate(gen):
            if i == index:
                return np.frombuffer(raw, np.uint8).reshape(h, w, 3)
    finally:
        gen.close()
    raise IndexError(index)


@pytest.fixture(scope="session")
def media(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("media")
    return {
        "tone": make_sample_video(root / "tone.mp4", seconds=2.0, fps=FPS, size=SIZE, faces=1, audio=True),
        "empty": make_sample_video(root / "empty.mp4", seconds=1.2, fps=FPS, size=SIZE, faces=0),
        "photo": make_sample_photo(root / "photo.png", size=(400, 300), faces=1),
    }


@pytest.fixture(scope="session")
def analyzer(tmp_path_factory) -> Analyzer:
    torch.manual_seed(0)
    weights = save_detector(create_detector(trained=True), tmp_path_factory.mktemp("detector"))
    config = AnalysisConfig(weights=str(weights), device="cpu", sampling=Sampling("count", 8))
    analyzer = Analyzer(config)
    analyzer.outputs = build_output_writers(RenderSettings(enabled="on"), n_inputs=1)
    return analyzer


@pytest.fixture(scope="session")
def reports(analyzer, media, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    return {name: analyzer.analyze(path, out_dir=out) for name, path in media.items()}


def test_annotated_video_matches_input(reports, media):
    report = reports["tone"]
    assert not report.errors and not report.warnings, report.warnings
    assert report.verdict in ("fake", "real", "inconclusive")
    video = Path(report.outputs["annotated_video"])
    assert video.name == "tone.mp4.annotated.mp4" and video.is_file()
    src_frames, src_secs = imageio_ffmpeg.count_frames_and_secs(str(media["tone"]))
    out_frames, out_secs = imageio_ffmpeg.count_frames_and_secs(str(video))
    assert abs(out_frames - src_frames) <= 1
    assert abs(out_secs - src_secs) <= 1.5 / FPS
    meta, src_meta = _meta(video), _meta(media["tone"])
    assert tuple(meta["size"]) == SIZE and meta["codec"] == "h264"
    assert src_meta.get("audio_codec") and meta.get("audio_codec") == "aac"
    assert abs(meta["fps"] - FPS) < 0.01


def test_video_is_annotated_on_every_frame(reports, media):
    video = Path(reports["tone"].outputs["annotated_video"])
    # a frame between analysed ones (8 samples of 50 frames) still carries a box and the timeline
    i = 4
    src, out = _frame(media["tone"], i).astype(int), _frame(video, i).astype(int)
    face = reports["tone"].tracks[0].faces[0]
    x1, y1, x2, y2 = (int(v) for v in face.box)
    h = src.shape[0]
    assert np.abs(out[h - 10:] - src[h - 10:]).mean() > 20           # timeline strip
    assert np.abs(out[:20] - src[:20]).mean() > 20                    # verdict banner
    assert np.abs(out[y1:y2, x1:x2] - src[y1:y2, x1:x2]).mean() > 3    # box edges and heatmap


def test_keyframe_images_exist_and_are_referenced(reports):
    report = reports["tone"]
    assert report.keyframes
    for n, keyframe in enumerate(report.keyframes):
        assert keyframe.image == report.outputs[f"keyframe_{n}"]
        image = cv2.imread(keyframe.image)
        assert image is not None and image.shape[1::-1] == SIZE
        strip = cv2.imread(report.outputs[f"keyframe_{n}_track{keyframe.track_id}_heatmaps"])
        assert strip is not None and strip.shape[1] > 4 * 224  # crop, two members, ensemble
        assert Path(keyframe.image).parent.name == "tone.mp4.keyframes"


def test_no_face_video_shows_the_banner(reports, media):
    report = reports["empty"]
    assert report.verdict == "no_face"
    video = Path(report.outputs["annotated_video"])
    frames = [imageio_ffmpeg.count_frames_and_secs(str(p))[0] for p in (video, media["empty"])]
    assert abs(frames[0] - frames[1]) <= 1
    assert "keyframe_0" not in report.outputs
    src, out = _frame(media["empty"], 10).astype(int), _frame(video, 10).astype(int)
    band = out[:24]
    assert band.mean() < 0.6 * src[:24].mean()                        # the banner darkens the top
    grey_text = (np.abs(band - 200).max(axis=2) < 40).sum()            # light grey "NO FACE FOUND" letters
    assert grey_text > 100
    assert verdict_banner("no_face", None, 0.0).text.startswith("NO FACE")


def test_photo_gets_an_annotated_png(reports):
    report = reports["photo"]
    assert not report.warnings, report.warnings
    image = cv2.imread(report.outputs["annotated_image"])
    assert image is not None and image.shape[1::-1] == (400, 300)
    assert report.outputs["annotated_image"].endswith("photo.png.annotated.png")


def test_timings_have_fixed_names(reports):
    for report in (reports["tone"], reports["photo"]):
        assert {"explain_s", "keyframes_s", "render_s"} <= report.timings.keys()
        assert not [k for k in report.timings if "Writer" in k or k == "explain_keyframes_s"]


def test_a_photo_is_explained_once(analyzer, media, tmp_path, monkeypatch):
    explained: list[int] = []  # crops per Explainer.explain call
    explain = Explainer.explain

    def counting(self: Explainer, crops: np.ndarray):
        explained.append(len(crops))
        return explain(self, crops)

    monkeypatch.setattr(Explainer, "explain", counting)
    report = analyzer.analyze(media["photo"], out_dir=tmp_path)
    faces = sum(len(t.faces) for t in report.tracks)
    assert faces >= 1 and explained == [faces]  # one pass serves the keyframe images and the annotated PNG
    assert {"annotated_image", "keyframe_0"} <= report.outputs.keys()
    assert report.keyframes[0].image == report.outputs["keyframe_0"]


def test_writers_leave_the_report_alone(analyzer, media, reports, tmp_path):
    report = reports["tone"]
    detailed = frozenset().union(*(w.detailed_frames(report) for w in analyzer.outputs))
    analysed = analyzer.analysed_input(report, open_media(media["tone"], analyzer.config.limits), tmp_path, detailed)
    before = copy.deepcopy(report)
    written: dict[str, str] = {}
    for writer in analyzer.outputs:
        written.update(writer.write(analysed))
    assert report == before  # the runner records outputs and keyframe images, not the writers
    assert {"annotated_video", "keyframe_0"} <= written.keys() and all(Path(p).is_file() for p in written.values())
    assert Path(written["keyframe_0"]).parent.parent == tmp_path
    with pytest.raises(dataclasses.FrozenInstanceError):
        analysed.report = before  # type: ignore[misc]
    with pytest.raises(TypeError):
        analysed.explanations[(0, 0)] = analysed.explanations[next(iter(analysed.explanations))]  # type: ignore[index]
    # every face keeps the small map the video draws; only keyframe faces keep the full-size maps
    assert len(analysed.explanations) == sum(len(t.faces) for t in report.tracks)
    assert all(e.heatmap.shape == (64, 64) and e.heatmap.dtype == np.uint8 for e in analysed.explanations.values())
    full = {frame for (frame, _), e in analysed.explanations.items() if e.crop is not None}
    assert full == {k.frame_index for k in report.keyframes}
    shown = next(f for t in report.tracks for f in t.faces if f.frame_index in full)
    crop, members, ensemble = analysed.explanation(shown).full()
    size = analyzer.face_detector.settings.crop_size
    assert crop.shape == (size, size, 3) and members.shape == (2, size, size) and ensemble.shape == (size, size)
    assert analysed.crop_margin == analyzer.face_detector.settings.crop_margin


def test_writers_ask_for_full_maps_where_they_show_them(reports):
    report = reports["tone"]
    faces = {f.frame_index for t in report.tracks for f in t.faces}
    assert KeyframeImageWriter(RenderSettings()).detailed_frames(report) == {k.frame_index for k in report.keyframes}
    assert KeyframeImageWriter(RenderSettings(explain_all_frames=True)).detailed_frames(report) == faces
    assert AnnotatedMediaWriter(RenderSettings()).detailed_frames(report) == frozenset()


def test_writer_selection():
    kinds = lambda ws: [type(w) for w in ws]  # noqa: E731
    assert kinds(build_output_writers(RenderSettings(), 1)) == [KeyframeImageWriter, AnnotatedMediaWriter]
    assert kinds(build_output_writers(RenderSettings(), 3)) == [KeyframeImageWriter]
    assert kinds(build_output_writers(RenderSettings(enabled="on"), 3)) == [KeyframeImageWriter, AnnotatedMediaWriter]
    assert build_output_writers(RenderSettings(enabled="off"), 1) == []
    assert kinds(build_output_writers(RenderSettings(keyframe_images=False), 1)) == [AnnotatedMediaWriter]


def test_track_path_interpolates_holds_and_drops():
    box = lambda x: np.array([x, 10, x + 20, 30], float)  # noqa: E731
    path = TrackPath([FaceSample(10, box(0), 0.2), FaceSample(20, box(100), 0.8), FaceSample(200, box(0), 0.5)],
                     max_gap_frames=50)
    mid = path.at(15)
    assert mid.box[0] == pytest.approx(50) and mid.score == pytest.approx(0.5)
    assert path.at(0).frame_index == 10                  # held before the first sample
    assert path.at(40).frame_index == 20                 # held beside a gap too long to bridge
    assert path.at(110) is None                          # dropped in the middle of that gap
    assert path.at(225).frame_index == 200 and path.at(226) is None  # held max_gap / 2 after the end


def test_heatmap_lands_in_the_crop_square():
    frame = np.full((100, 100, 3), 128, np.uint8)
    heat = np.zeros((8, 8), np.float32)
    heat[:4, :4] = 1.0                                   # hot top-left quarter of the crop
    blend_heatmap(frame, heat, np.array([20, 40, 60, 80]), alpha=0.5)
    changed = np.abs(frame.astype(int) - 128).sum(axis=2) > 30
    ys, xs = np.nonzero(changed)
    assert changed.any() and xs.min() >= 20 and ys.min() >= 40 and xs.max() < 45 and ys.max() < 65


def test_render_scale_and_no_audio(media, tmp_path):
    src = media["empty"]
    frames, _ = imageio_ffmpeg.count_frames_and_secs(str(src))
    stats = render_annotated_video(src, tmp_path / "half.mp4", fps=FPS, frame_count=frames, width=SIZE[0],
                                   height=SIZE[1], has_audio=False,
                                   tracks={0: [FaceSample(5, np.array([100, 50, 200, 150]), 0.9, np.ones((8, 8)))]},
                                   banner=verdict_banner("fake", 0.9, 50.0), analysed=[5, 15, 25], style=OverlayStyle(),
                                   scale=0.5)
    assert stats.frames == frames and stats.fps > 0
    meta = _meta(stats.path)
    assert tuple(meta["size"]) == (240, 134) and not meta.get("audio_codec")  # 135 rounded to even


def test_strip_shows_a_seed_ensemble_as_one_tile_per_network():
    from deepfake_detect.pipeline.core.outputs import tiles_by_architecture

    maps = np.zeros((4, 8, 8), np.float32)
    maps[0, :4] = 1.0      # mobilenet seed 0: top half
    maps[2, :, :4] = 0.5   # mobilenet seed 1: left half, weaker
    maps[1] = maps[3] = 0.25
    names = ["mobilenetv2_100-seed0", "tf_efficientnetv2_b0-seed0", "mobilenetv2_100-seed1", "tf_efficientnetv2_b0-seed1"]
    archs = ["mobilenetv2_100", "tf_efficientnetv2_b0", "mobilenetv2_100", "tf_efficientnetv2_b0"]
    labels, tiles, scores = tiles_by_architecture(names, archs, maps, [0.2, 0.6, 0.4, 0.8])
    assert labels == ["mobilenetv2_100 x2", "tf_efficientnetv2_b0 x2"]
    assert scores == pytest.approx([0.3, 0.7])
    # the mean of the two maps, its strongest region (top left: both seeds agree) read as 1
    assert tiles.shape == (2, 8, 8) and tiles[0, 0, 0] == pytest.approx(1.0)
    assert tiles[0, 0, 7] == pytest.approx(0.5 / 0.75) and tiles[0, 7, 0] == pytest.approx(0.25 / 0.75)
    assert tiles[0, 7, 7] == 0.0 and np.allclose(tiles[1], 1.0)
    # members of different networks are shown as they are
    labels, tiles, scores = tiles_by_architecture(names[:2], archs[:2], maps[:2], [0.2, 0.6])
    assert labels == names[:2] and np.array_equal(tiles, maps[:2]) and scores == [0.2, 0.6]
