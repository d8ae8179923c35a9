"""Render stage: write frames to an H.264 mp4 through the ffmpeg bundled with imageio-ffmpeg.

Frames are piped raw to ffmpeg one at a time, so memory does not depend on the video's length.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import ffmpeg
import imageio_ffmpeg
import numpy as np


def ffmpeg_exe() -> str:
    """The static ffmpeg inside the imageio-ffmpeg wheel (with libx264 and aac): no system ffmpeg."""
    return imageio_ffmpeg.get_ffmpeg_exe()


class FrameEncoder:
    """Context manager: `write(frame)` RGB uint8 frames of one size; mux audio from `audio_from`.

    ffmpeg-python builds the argument list, so paths are never interpreted by a shell.
    """

    def __init__(self, path: str | Path, width: int, height: int, fps: float,
                 audio_from: str | Path | None = None, audio_lavfi: str | None = None, crf: int = 23):
        self.path = Path(path)
        self.size = (width, height)
        video = ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{width}x{height}", framerate=fps)
        streams = [video]
        if audio_from is not None:
            streams.append(ffmpeg.input(str(audio_from)).audio)
        elif audio_lavfi is not None:
            streams.append(ffmpeg.input(audio_lavfi, f="lavfi").audio)
        has_audio = len(streams) > 1
        audio_args = {"acodec": "aac", "shortest": None} if has_audio else {}
        out = ffmpeg.output(*streams, str(self.path), vcodec="libx264", pix_fmt="yuv420p", crf=crf,
                            preset="veryfast", movflags="+faststart", **audio_args)
        args = out.overwrite_output().global_args("-loglevel", "error", "-nostdin").compile(cmd=ffmpeg_exe())
        self._proc = subprocess.Popen(args, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        self.frames_written = 0

    def write(self, frame: np.ndarray) -> None:
        if frame.shape[1::-1] != self.size:
            raise ValueError(f"frame is {frame.shape[1]}x{frame.shape[0]}, encoder expects {self.size[0]}x{self.size[1]}")
        self._proc.stdin.write(np.ascontiguousarray(frame, dtype=np.uint8).tobytes())
        self.frames_written += 1

    def close(self) -> None:
        if self._proc.stdin and not self._proc.stdin.closed:
            self._proc.stdin.close()
        stderr = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
        if self._proc.wait() != 0:
            raise RuntimeError(f"ffmpeg failed writing {self.path.name}: {stderr.strip().splitlines()[-1:] or '?'}")

    def __enter__(self) -> "FrameEncoder":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._proc.kill()
            self._proc.wait()
