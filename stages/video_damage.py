"""Which frames of a damaged video are damaged, as the bundled ffmpeg decodes them.

decord's decoder runs in threads that read ahead, so the FFmpeg messages it logs cannot be pinned
on the frame being read: the same file would give different counts from run to run. Here the
bundled ffmpeg decodes the video stream once, and its own per-frame verdict is used instead:
`-debug_ts` prints one line per decoded frame, in order, and ffmpeg prints "corrupt decoded frame"
just before the line of a frame the decoder had to conceal damage in (FFmpeg's frame error
flags); frames whose data could not be decoded at all are simply missing. That is deterministic.

A picture after damage in its group of pictures (keyframe to next keyframe) is built on damaged
references, so it counts as damaged too. This only runs for a video in which decord reported
errors while the sampled frames were read.

The clean frames of such a video are decoded here too (`clean_frames`): decord decodes ahead of the
frame asked for, and whether a damaged packet further on fails that read depends on its threads'
timing, so it loses a clean frame now and then. ffmpeg decoding the stream in order does not.
"""
from __future__ import annotations

import logging
import os
import re
import subprocess
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

_FRAME_RE = re.compile(r"decoder -> pts:\S+ pts_time:(-?[0-9.]+|NOPTS)")
_SHOWN_RE = re.compile(r"Parsed_showinfo.* n: *\d+ .*pts_time:(-?[0-9.]+)")


def _ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def _nearest(starts: np.ndarray, t: float, tolerance: float) -> int | None:
    """The frame whose start time is `t` (decord's start times against ffmpeg's), or None."""
    k = int(np.searchsorted(starts, t))
    candidates = [j for j in (k - 1, k) if 0 <= j < len(starts)]
    if not candidates:
        return None
    j = min(candidates, key=lambda c: abs(float(starts[c]) - t))
    return j if abs(float(starts[j]) - t) <= tolerance else None


def _frame_s(starts: np.ndarray) -> float:
    return max(float(np.median(np.diff(starts))) if len(starts) > 1 else 0.04, 1e-3)


def clean_frames(path: Path, starts: np.ndarray, wanted: np.ndarray, width: int, height: int,
                 timeout_s: float) -> dict[int, np.ndarray]:
    """RGB frames `wanted` (indices into `starts`, decord's start times), upright and scaled to
    width x height, decoded by the bundled ffmpeg in one pass. A frame it cannot produce is absent."""
    if not len(wanted):
        return {}
    frame_s = _frame_s(starts)
    tolerance = frame_s / 2
    times = [float(starts[i]) for i in wanted.tolist()]
    pick = "+".join(f"lt(abs(t-{t:.6f}),{tolerance:.6f})" for t in times)
    cmd = [_ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-threads", "1", "-i", os.path.abspath(path),
           "-map", "0:v:0", "-an", "-sn", "-dn", "-t", f"{max(times) + 2 * frame_s:.6f}",
           "-vf", f"select='{pick}',showinfo,scale={width}:{height}", "-fps_mode", "passthrough",
           "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired):
        log.debug("ffmpeg could not decode the clean frames of %s", path, exc_info=True)
        return {}
    shown = [float(m.group(1)) for m in map(_SHOWN_RE.search, proc.stderr.decode("utf-8", "replace").splitlines()) if m]
    size = width * height * 3
    if len(proc.stdout) != size * len(shown):  # output and its log disagree: trust neither
        return {}
    frames = np.frombuffer(proc.stdout, dtype=np.uint8).reshape(len(shown), height, width, 3)
    asked = set(wanted.tolist())
    out: dict[int, np.ndarray] = {}
    for t, frame in zip(shown, frames, strict=True):
        j = _nearest(starts, t, tolerance)
        if j is not None and j in asked:
            out[j] = frame
    return out


def damaged_frames(path: Path, starts: np.ndarray, gop_starts: np.ndarray, last: int,
                   timeout_s: float) -> np.ndarray | None:
    """Mask over frames 0..`last`: True where damaged or undecodable. `starts` are the frames' start
    times in seconds (decord's), `gop_starts` the keyframe indices. None when ffmpeg cannot tell."""
    last = int(min(last, len(starts) - 1))
    frame_s = _frame_s(starts)
    until = float(starts[last]) + 2 * frame_s
    cmd = [_ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-debug_ts", "-threads", "0",
           "-i", os.path.abspath(path), "-map", "0:v:0", "-an", "-sn", "-dn", "-t", f"{until:.6f}", "-f", "null", "-"]
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired):
        log.debug("ffmpeg could not map the damage in %s", path, exc_info=True)
        return None
    present = np.zeros(last + 1, dtype=bool)
    damaged = np.zeros(last + 1, dtype=bool)
    corrupt_next = False
    tolerance = frame_s / 2
    for line in proc.stderr.decode("utf-8", errors="replace").splitlines():
        if "corrupt decoded frame" in line:
            corrupt_next = True
            continue
        match = _FRAME_RE.search(line)
        if match is None:
            continue
        flagged, corrupt_next = corrupt_next, False
        if match.group(1) == "NOPTS":
            continue
        j = _nearest(starts, float(match.group(1)), tolerance)
        if j is None or j > last:
            continue
        present[j] = True
        damaged[j] |= flagged
    if not present.any():  # nothing matched: the timestamps disagree, the map says nothing
        return None
    damaged |= ~present
    gops = np.searchsorted(gop_starts, np.arange(last + 1), side="right") - 1
    for gop in np.unique(gops[damaged]):  # from its first damaged frame on, the whole group
        members = np.flatnonzero(gops == gop)
        first = members[damaged[members]][0]
        damaged[members[members >= first]] = True
    return damaged
