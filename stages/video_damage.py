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


def damaged_frames(path: Path, starts: np.ndarray, gop_starts: np.ndarray, last: int,
                   timeout_s: float) -> np.ndarray | None:
    """Mask over frames 0..`last`: True where damaged or undecodable. `starts` are the frames' start
    times in seconds (decord's), `gop_starts` the keyframe indices. None when ffmpeg cannot tell."""
    import imageio_ffmpeg

    last = int(min(last, len(starts) - 1))
    frame_s = float(np.median(np.diff(starts))) if len(starts) > 1 else 0.04
    until = float(starts[last]) + 2 * max(frame_s, 1e-3)
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-debug_ts", "-threads", "0",
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
    tolerance = max(frame_s, 1e-3) / 2
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
        t = float(match.group(1))
        k = int(np.searchsorted(starts, t))
        candidates = [j for j in (k - 1, k) if 0 <= j < len(starts)]
        if not candidates:
            continue
        j = min(candidates, key=lambda c: abs(float(starts[c]) - t))
        if abs(float(starts[j]) - t) > tolerance or j > last:
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
