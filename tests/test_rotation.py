"""Rotated phone videos: decoded frames are upright, as a player (ffmpeg's autorotation) shows them.

Phones store the sensor's landscape frames and a display matrix saying how to turn them. The
fixtures are made the same way with the bundled ffmpeg: encode stored frames, then re-mux them with
`-display_rotation` (counter-clockwise degrees), which writes that matrix without re-encoding.
The reference for "upright" is the frame `ffmpeg -i clip -frames:v 1 ref.png` writes (it autorotates).
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import cv2
import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image

from deepfake_detect.stages.decode import DecodeLimits, open_media
from deepfake_detect.stages.video_probe import video_rotations

STORED_W, STORED_H = 192, 112


def _ffmpeg(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-y", "-loglevel", "error",
                           *args], stdin=subprocess.DEVNULL, capture_output=True, timeout=60, check=True)


def _encode(path: Path, frames: list[np.ndarray], fps: int = 10) -> Path:
    h, w = frames[0].shape[:2]
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-y", "-loglevel", "error",
                    "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", str(fps), "-i", "pipe:",
                    "-c:v", "libx264", "-preset", "ultrafast", "-crf", "8", "-pix_fmt", "yuv420p", str(path)],
                   input=b"".join(np.ascontiguousarray(f).tobytes() for f in frames), capture_output=True,
                   timeout=60, check=True)
    return path


def _with_rotation(src: Path, dst: Path, clockwise: int) -> Path:
    """Copy of `src` whose display matrix asks players to turn the frames `clockwise` degrees."""
    rot = ["-display_rotation", str(-clockwise % 360)] if clockwise else []  # the option is counter-clockwise
    _ffmpeg(*rot, "-i", str(src), "-c", "copy", str(dst))
    return dst


def _player_frame(path: Path, tmp_path: Path) -> np.ndarray:
    png = tmp_path / f"{path.name}.ref.png"
    _ffmpeg("-i", str(path), "-frames:v", "1", str(png))
    with Image.open(png) as im:  # PIL: cv2 cannot read PNGs once decord's bundled zlib is loaded first
        return np.asarray(im.convert("RGB"))


def _marker_frame() -> np.ndarray:
    """Grey frame with a red block top-left and a blue block top-right: every turn and flip differs."""
    f = np.full((STORED_H, STORED_W, 3), 128, np.uint8)
    f[:28, :40] = (230, 20, 20)
    f[:28, -40:] = (20, 20, 230)
    return f


def _mad(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


@pytest.fixture(scope="module")
def stored_clip(tmp_path_factory) -> Path:
    return _encode(tmp_path_factory.mktemp("rot") / "stored.mp4", [_marker_frame()] * 10)


def _turned(frame: np.ndarray, clockwise: int) -> np.ndarray:
    return np.rot90(frame, k=-(clockwise // 90))


@pytest.mark.parametrize("clockwise", [0, 90, 180, 270])
def test_rotated_mp4_is_decoded_upright(stored_clip, tmp_path, clockwise):
    clip = _with_rotation(stored_clip, tmp_path / f"rot{clockwise}.mp4", clockwise)
    reader = open_media(clip)
    info = reader.info
    assert info.rotation == clockwise
    assert (info.source_width, info.source_height) == (STORED_W, STORED_H)
    upright = (STORED_H, STORED_W) if clockwise in (90, 270) else (STORED_W, STORED_H)
    assert (info.width, info.height) == upright
    frames = reader.read(np.array([0, 5]))
    assert frames.shape == (2, info.height, info.width, 3)
    assert _mad(frames[0], _player_frame(clip, tmp_path)) < 3      # as ffmpeg / a player shows it
    assert _mad(frames[1], _turned(_marker_frame(), clockwise)) < 6  # = stored turned `rotation` clockwise
    batches = list(reader.batches(np.arange(10), chunk_size=4))
    assert all(b.frames.shape[1:] == (info.height, info.width, 3) for b in batches)


@pytest.mark.parametrize("clockwise", [90, 270])
def test_rotated_and_downscaled_keeps_the_upright_aspect(stored_clip, tmp_path, clockwise):
    clip = _with_rotation(stored_clip, tmp_path / "big.mp4", clockwise)
    reader = open_media(clip, DecodeLimits(max_decode_pixels=STORED_W * STORED_H // 2))
    info = reader.info
    assert (info.width, info.height) == (78, 134)  # upright portrait, each side about 1/sqrt(2)
    frame = reader.read(np.array([0]))[0]
    assert frame.shape == (info.height, info.width, 3)
    ref = cv2.resize(_player_frame(clip, tmp_path), (info.width, info.height), interpolation=cv2.INTER_AREA)
    assert _mad(frame, ref) < 6


def test_display_matrix_in_mkv_is_turned_in_python(stored_clip, tmp_path):
    # decord's FFmpeg 4.1 does not read Matroska's rotation, the bundled ffmpeg 9 does
    clip = _with_rotation(stored_clip, tmp_path / "rot90.mkv", 90)
    reader = open_media(clip)
    assert (reader.info.width, reader.info.height, reader.info.rotation) == (STORED_H, STORED_W, 90)
    frame = reader.read(np.array([0]))[0]
    assert _mad(frame, _player_frame(clip, tmp_path)) < 3


def test_legacy_rotate_tag_alone_is_not_applied(stored_clip, tmp_path):
    # ffmpeg 9 (and so the renderer) ignores a bare `rotate` tag; decord turns by it, so it is undone
    clip = tmp_path / "tag90.mkv"
    _ffmpeg("-i", str(stored_clip), "-c", "copy", "-metadata:s:v", "rotate=90", str(clip))
    reader = open_media(clip)
    assert (reader.info.width, reader.info.height, reader.info.rotation) == (STORED_W, STORED_H, 0)
    frame = reader.read(np.array([0]))[0]
    assert _mad(frame, _player_frame(clip, tmp_path)) < 3


def test_rotation_parsing_from_ffmpeg_header():
    new = ("Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'a.mp4':\n"
           "  Stream #0:0[0x1](und): Video: h264 (High), yuv420p, 1920x1080, 30 fps (default)\n"
           "      Side data:\n        Display Matrix: rotation of -90.00 degrees\n"
           "  Stream #0:1[0x2](und): Audio: aac, 44100 Hz, stereo (default)\n")
    old = new.replace("Display Matrix: rotation of -90.00", "displaymatrix: rotation of 90.00")
    assert video_rotations(new) == (90, 90)
    assert video_rotations(old) == (270, 270)
    assert video_rotations(new.replace("mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm")) == (90, 0)
    assert video_rotations(new.replace("-90.00", "-180.00")) == (180, 180)
    assert video_rotations(new.replace("-90.00", "-45.00")) == (0, 0)
    tagged = new.replace("      Side data:\n        Display Matrix: rotation of -90.00 degrees\n",
                         "      Metadata:\n        ROTATE          : 90\n")
    assert video_rotations(tagged) == (0, 90)
    assert video_rotations("") == (0, 0)


def test_face_is_found_in_rotated_phone_clip(tmp_path):
    from deepfake_detect.pipeline.core.samples import render_sample_frame
    from deepfake_detect.stages.detect import create_face_detector

    w, h, n = 270, 480, 10  # a portrait phone clip whose sensor stored it landscape, 90 degrees off
    upright = [render_sample_frame(w, h, i / 10, 1.0, faces=1) for i in range(n)]
    stored = _encode(tmp_path / "stored.mp4", [np.rot90(f, k=1) for f in upright])  # 480x270
    clip = _with_rotation(stored, tmp_path / "phone.mp4", 90)
    reader = open_media(clip)
    assert (reader.info.width, reader.info.height, reader.info.rotation) == (w, h, 90)
    frame = reader.read(np.array([5]))[0]
    assert _mad(frame, upright[5]) < 6
    (faces,) = create_face_detector().detect(frame[None])
    assert faces, "no face in the upright frame"
    x1, y1, x2, y2 = faces[0].box
    # render_sample_frame puts the head at x = w * (0.3 + 0.4 t), y = h * (0.5 + 0.05 sin(4 pi t)), t = 0.5
    assert abs((x1 + x2) / 2 - w * 0.5) < 40 and abs((y1 + y2) / 2 - h * 0.5) < 60


@pytest.mark.parametrize(("suffix", "clockwise"), [(".mp4", 90), (".mp4", 270), (".mkv", 90)])
def test_frames_ffmpeg_decodes_for_a_damaged_video_match_decord(stored_clip, tmp_path, suffix, clockwise):
    # where decord fails on the clean frames of a damaged video, ffmpeg decodes them: same upright,
    # downscaled picture as decord gives
    from deepfake_detect.stages.video_damage import clean_frames

    clip = _with_rotation(stored_clip, tmp_path / f"rot{clockwise}{suffix}", clockwise)
    reader = open_media(clip, DecodeLimits(max_decode_pixels=STORED_W * STORED_H // 2))
    starts = np.asarray(reader._video.get_frame_timestamp(range(10)), dtype=np.float64)[:, 0]
    frames = clean_frames(clip, starts, np.array([0, 5]), reader.info.width, reader.info.height, 30.0)
    decord_frames = reader.read(np.array([0, 5]))
    assert sorted(frames) == [0, 5]
    assert _mad(frames[0], decord_frames[0]) < 6 and _mad(frames[5], decord_frames[1]) < 6
