"""What ffmpeg says about a video before decord opens it: its streams, codec, rotation, and the
refusal when it cannot be opened (used by `stages.decode`)."""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from deepfake_detect.stages.media import (
    DamagedError,
    MediaError,
    NotMediaError,
    NoVideoStreamError,
    TruncatedError,
    UnsupportedCodecError,
    clean_reason,
)
from deepfake_detect.stages.media_sniff import Sniffed

if TYPE_CHECKING:
    pass


_FFMPEG_GENERIC = ("ffmpeg version", "configuration", "built with", "===", "Error opening input", "Terminating thread",
                   "Task finished", "Error number", "Conversion failed", "Error while filtering", "Nothing was written")


def _ffmpeg_reason(exc: Exception) -> str:
    """The one informative line of ffmpeg's stderr inside an imageio-ffmpeg error ("" if none)."""
    lines = [re.sub(r"^(\[[^\]]*\]\s*)+", "", ln.strip()) for ln in str(exc).splitlines() if ln.strip()]
    useful = [ln for ln in lines if re.search(r"(invalid|not found|error|no such|denied|unsupported|could not)", ln, re.I)
              and not ln.startswith(_FFMPEG_GENERIC)]
    return clean_reason(useful[-1]) if useful else ""


def probe_video(path: Path) -> dict:
    """Container metadata via the bundled ffmpeg (also catches files decord would choke on)."""
    import imageio_ffmpeg

    # imageio-ffmpeg warns through logging when ffmpeg's rotation changes the frame size (every
    # portrait phone clip): expected here, and not for the user's terminal
    logger = logging.getLogger("imageio_ffmpeg")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        gen = imageio_ffmpeg.read_frames(str(path))
        try:
            meta = next(gen)
        finally:
            gen.close()
    except (OSError, RuntimeError, StopIteration) as exc:
        reason = _ffmpeg_reason(exc)
        if re.search(r"decoder .*not found|unsupported codec|no decoder", reason, re.I):
            raise UnsupportedCodecError(f"unsupported video codec ({reason})") from None
        raise DamagedError("video is damaged: ffmpeg cannot decode it" + (f" ({reason})" if reason else "")) from None
    finally:
        logger.setLevel(level)
    if not meta.get("source_size") or not meta.get("fps"):
        raise NoVideoStreamError("no video stream: nothing to analyse") from None
    return meta


DEMUXER_RE = re.compile(r"^Input #0, (.+?), from ", re.M)
_VIDEO_STREAM_RE = re.compile(r"^\s*Stream #0:\d+.*?: Video: ", re.M)
_STREAM_RE = re.compile(r"^\s*Stream #0:\d+\S*: (Video|Audio|Subtitle|Data|Attachment): (\S+)(.*)$", re.M)
# ffmpeg 4-6 print "displaymatrix: rotation of -90.00 degrees", ffmpeg 7-9 "Display Matrix: rotation of ..."
_DISPLAY_MATRIX_RE = re.compile(r"display\s*matrix:?\s*rotation of\s*(-?\d+(?:\.\d+)?)\s*degrees", re.I)
_ROTATE_TAG_RE = re.compile(r"^\s*rotate\s*:\s*(-?\d+(?:\.\d+)?)\s*$", re.I | re.M)


def ffmpeg_header(path: Path, timeout_s: float = 30.0) -> str:
    """The stream description ffmpeg prints for `path` (stderr of `ffmpeg -i`, which exits 1)."""
    import subprocess

    import imageio_ffmpeg

    try:
        proc = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", os.path.abspath(path)],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return proc.stderr.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class _Stream:
    type: str     # Video, Audio, Subtitle, Data, Attachment
    codec: str
    picture: bool  # a cover image (attached picture), not a moving video


def stream_list(header: str) -> list[_Stream]:
    return [_Stream(m.group(1), m.group(2).rstrip(","), "(attached pic)" in m.group(3))
            for m in _STREAM_RE.finditer(header)]


def refuse_unopened(header: str, sniffed: Sniffed) -> MediaError:
    """Why ffmpeg could not open a file at all, as the user should read it."""
    lines = [ln.strip() for ln in header.splitlines() if ln.strip()]
    reason = clean_reason(re.sub(r"^Error opening input files?:\s*", "", lines[-1])) if lines else "ffmpeg gave no reason"
    if sniffed.kind == "unknown":  # ffmpeg guessed a format from the name and failed: not media at all
        return NotMediaError("not a media file: the content is not a known image or video format")
    if "moov atom not found" in header:
        return TruncatedError("video is truncated or incomplete: its index (the MP4 'moov' box) is missing")
    if "Not yet implemented" in reason:
        return UnsupportedCodecError(f"unsupported video format: the {sniffed.format} file uses a feature ffmpeg "
                                     "does not implement")
    return DamagedError(f"video is damaged: the {sniffed.format} container cannot be read ({reason})")


def iso_missing_bytes(path: Path, size: int, max_boxes: int = 100_000) -> int:
    """For MP4/MOV: how many bytes the top-level boxes claim beyond the end of the file (0: none)."""
    pos = 0
    with open(path, "rb") as fh:
        for _ in range(max_boxes):
            if pos + 8 > size:
                return 0
            fh.seek(pos)
            head = fh.read(16)
            box = int.from_bytes(head[:4], "big")
            if box == 1 and len(head) >= 16:
                box = int.from_bytes(head[8:16], "big")
            if box == 0:      # runs to the end of the file by definition
                return 0
            if box < 8:       # not a box structure: leave the judgement to the decoders
                return 0
            if pos + box > size:
                return pos + box - size
            pos += box
    return 0


def video_rotations(header: str) -> tuple[int, int]:
    """(clockwise turn that makes the stored frames upright, clockwise turn decord 0.6 applies itself).

    Upright is what the bundled ffmpeg (and players) show: only the stream's display matrix counts;
    ffmpeg prints its counter-clockwise angle, so "rotation of -90.00 degrees" is a 90 degree
    clockwise turn. decord 0.6 (FFmpeg 4.1 inside) instead reads a legacy `rotate` tag first (ffmpeg
    9 ignores it) and sees the display matrix only in MP4/MOV; it turns frames only by 90, 180 or
    270 and then scales them to the width/height it was given.
    """
    stream = _VIDEO_STREAM_RE.search(header)
    if stream is None:
        return 0, 0
    block = header[stream.end():]  # this stream's side data and metadata, up to the next stream
    following = re.search(r"^\s*(Stream #|Input #|Output #)", block, re.M)
    block = block[: following.start()] if following else block
    upright = 0
    matrix = _DISPLAY_MATRIX_RE.search(block)
    if matrix:
        cw = -float(matrix.group(1)) % 360.0
        quarter = round(cw / 90.0)
        if abs(cw - 90.0 * quarter) < 1.0:  # other angles are left alone (a player would tilt the picture)
            upright = 90 * quarter % 360
    tag = _ROTATE_TAG_RE.search(block)
    tag_cw = float(tag.group(1)) % 360.0 if tag else 0.0
    demuxer = DEMUXER_RE.search(header)
    if tag_cw:
        by_decord = int(tag_cw)
    elif matrix and demuxer and demuxer.group(1).split(",")[0] == "mov":
        by_decord = int(-float(matrix.group(1)) % 360.0)
    else:
        by_decord = 0
    return upright, by_decord if by_decord in (90, 180, 270) else 0


