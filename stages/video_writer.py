"""Encode RGB frames to an H.264 mp4 with the static ffmpeg bundled by imageio-ffmpeg, with audio.

Frames are piped raw to ffmpeg one at a time, so memory does not depend on the video's length.
The audio comes either from a media file (the original soundtrack, re-muxed) or from an lavfi
source (the test tone of the synthetic sample clips).

Why not `imageio_ffmpeg.write_frames`: it cannot open an lavfi input (it has no place for `-f lavfi`
before the audio's `-i`), maps only the first audio track, and never looks at ffmpeg's exit status,
so a failed encode would pass silently. Hence our own process, its arguments composed by
ffmpeg-python; its stderr is drained by a thread, because an unread pipe that fills up blocks
ffmpeg, and ffmpeg blocked on stderr stops reading the frames we are writing: a deadlock.
"""
from __future__ import annotations

import subprocess
import threading
from contextlib import suppress
from pathlib import Path
from types import TracebackType
from typing import IO

import imageio_ffmpeg
import numpy as np

_STDERR_TAIL_BYTES = 8192  # enough for ffmpeg's last error lines; the rest is dropped as it comes


def ffmpeg_exe() -> str:
    """The static ffmpeg inside the imageio-ffmpeg wheel (with libx264 and aac): no system ffmpeg."""
    return imageio_ffmpeg.get_ffmpeg_exe()


def encoder_args(path: Path, width: int, height: int, fps: float, audio_from: str | Path | None,
                 audio_lavfi: str | None, crf: int, shortest: bool) -> list[str]:
    """The ffmpeg argument list: raw RGB frames on stdin, optional audio, H.264 + AAC mp4 out.

    Composed by ffmpeg-python, which returns a list, never a shell string, so paths with spaces or
    quotes reach ffmpeg as they are.
    """
    import ffmpeg

    video = ffmpeg.input("pipe:", format="rawvideo", framerate=fps, pix_fmt="rgb24", s=f"{width}x{height}")
    streams = [video["v"]]
    options: dict[str, object] = {}
    audio = (ffmpeg.input(str(audio_from)) if audio_from is not None
             else ffmpeg.input(audio_lavfi, format="lavfi") if audio_lavfi is not None else None)
    if audio is not None:
        streams.append(audio["a"])  # -map 1:a: every audio track of the second input
        options["acodec"] = "aac"
        if shortest:  # suits a generated tone; a re-muxed original keeps its own lengths instead
            options["shortest"] = None
    output = ffmpeg.output(*streams, str(path), vcodec="libx264", pix_fmt="yuv420p", crf=crf, preset="veryfast",
                           movflags="+faststart", **options)
    return list(output.global_args("-loglevel", "error", "-nostdin").overwrite_output().compile(cmd=ffmpeg_exe()))


def _drain(stream: IO[bytes], tail: bytearray) -> None:
    """Read `stream` to its end, keeping only its last bytes in `tail`."""
    while chunk := stream.read(4096):
        tail += chunk
        del tail[:-_STDERR_TAIL_BYTES]
    stream.close()


class FrameEncoder:
    """Context manager: `write(frame)` RGB uint8 frames of one size; mux audio from `audio_from`
    (a media file) or `audio_lavfi` (an lavfi source such as "sine=frequency=440:duration=2")."""

    def __init__(self, path: str | Path, width: int, height: int, fps: float,
                 audio_from: str | Path | None = None, audio_lavfi: str | None = None, crf: int = 23,
                 shortest: bool = True) -> None:
        self.path = Path(path)
        self.size = (width, height)
        args = encoder_args(self.path, width, height, fps, audio_from, audio_lavfi, crf, shortest)
        self._proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE)
        assert self._proc.stdin is not None  # stdin=PIPE always gives a pipe
        self._stdin: IO[bytes] = self._proc.stdin
        self._stderr = bytearray()
        self._drainer = threading.Thread(target=_drain, args=(self._proc.stderr, self._stderr), daemon=True)
        self._drainer.start()

    def write(self, frame: np.ndarray) -> None:
        if frame.shape[1::-1] != self.size:
            raise ValueError(f"frame is {frame.shape[1]}x{frame.shape[0]}, "
                             f"encoder expects {self.size[0]}x{self.size[1]}")
        try:
            self._stdin.write(np.ascontiguousarray(frame, dtype=np.uint8).tobytes())
        except BrokenPipeError:  # ffmpeg quit early: its own message says why, a broken pipe does not
            self._finish()
            raise

    def close(self) -> None:
        """Flush the last frames and wait for ffmpeg; raises if it failed."""
        if not self._stdin.closed:
            self._stdin.close()
        self._finish()

    def _finish(self) -> None:
        returncode = self._proc.wait()
        self._drainer.join()
        if returncode != 0:
            lines = self._stderr.decode(errors="replace").strip().splitlines()
            raise RuntimeError(f"ffmpeg failed writing {self.path.name}: {lines[-1] if lines else '?'}")

    def __enter__(self) -> FrameEncoder:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:  # the caller failed mid-video: stop ffmpeg now rather than finish a file nobody wants
            self._proc.kill()
            with suppress(OSError):  # frames still buffered for the dead process cannot be flushed
                self._stdin.close()
            self._proc.wait()
            self._drainer.join()
