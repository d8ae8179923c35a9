"""FFmpeg's messages from inside decord: to the debug log instead of the terminal, and counted.

decord decodes with its own bundled copy of FFmpeg's libraries, whose `av_log` writes straight to
the process's C-level stderr ("[h264 @ 0x...] error while decoding MB 2 0"), past Python's
logging and past any redirection of `sys.stderr`. Those lines are also the only sign of a damaged
frame: the decoder conceals the damage and hands back a frame that looks decoded.

`install()` points that libavutil's log callback (`av_log_set_callback`, the documented FFmpeg
API that PyAV uses the same way) at a Python function that sends each line to this module's
logger at DEBUG and counts those at error level or worse. The decode stage reads `errors()`
around each read to tell which sampled frames came out damaged. A few error-level messages mean
only that decoding started at a keyframe whose neighbours reference earlier pictures (open GOPs,
recovery points); they are logged but not counted.

Where the library cannot be found (decord built against a system FFmpeg, another platform),
decord's own log level is set to quiet: no noise, and damage is then seen only when decord raises.

decord's own C++ code also writes a line to stderr when it fails to open a file ("[12:00:00]
/github/workspace/src/video/video_reader.cc:83: ERROR opening: ..."); `stderr_to_log()` catches
that at the file-descriptor level around the (short) open and logs it at DEBUG.
"""
from __future__ import annotations

import atexit
import ctypes
import logging
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger("deepfake_detect.stages.decoder")

AV_LOG_QUIET, AV_LOG_ERROR, AV_LOG_WARNING, AV_LOG_INFO = -8, 16, 24, 32

# Error-level messages that say decoding started at a random-access point (after a seek into an
# open GOP, as in MPEG-TS), not that data is damaged. "decode_slice_header error" only follows the
# line that gives a slice's real failure (logged, and counted if it is damage, on its own).
_BENIGN = ("missing reference picture", "reference picture missing during reorder", "could not find ref with poc",
           "co located pocs unavailable", "mmco: unref short failure", "decode_slice_header error")

_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)

_lock = threading.Lock()


class _State:
    installed: bool | None = None   # None: not tried yet
    errors = 0                      # error-level messages counted so far
    last = ""                       # the last of them


_state = _State()
_keep: list[object] = []   # the ctypes callback and library must outlive every decoder thread


def _libavutil() -> Path | None:
    """decord's own libavutil: its wheel bundles it in `decord.libs/` beside the package."""
    import decord

    package = Path(decord.__file__).resolve().parent
    for folder in (package.parent / "decord.libs", package):
        found = sorted(folder.glob("libavutil*.so*")) if folder.is_dir() else []
        if found:
            return found[0]
    return None


def _on_log(lib: ctypes.CDLL, avcl: int | None, level: int, fmt: bytes | None, args: int | None) -> None:
    try:
        if level > AV_LOG_INFO or fmt is None:
            return
        line = ctypes.create_string_buffer(1024)
        prefix = ctypes.c_int(1)
        lib.av_log_format_line2(avcl, level, fmt, args, line, len(line), ctypes.byref(prefix))
        text = line.value.decode("utf-8", errors="replace").strip()
        if not text:
            return
        if level <= AV_LOG_ERROR and not any(b in text.lower() for b in _BENIGN):
            with _lock:
                _state.errors += 1
                _state.last = text
        log.debug("decoder: %s", text)
    except BaseException:  # an exception must never cross back into C
        pass


def install() -> bool:
    """Route decord's FFmpeg log through Python once per process; True when errors can be counted."""
    with _lock:
        if _state.installed is not None:
            return _state.installed
        installed = False
        try:
            path = _libavutil()
            if path is not None:
                lib = ctypes.CDLL(str(path))  # the copy decord already loaded: same path, same handle
                lib.av_log_format_line2.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p,
                                                    ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
                lib.av_log_set_callback.argtypes = [ctypes.c_void_p]
                callback = _CALLBACK(lambda avcl, level, fmt, args: _on_log(lib, avcl, level, fmt, args))
                _keep.extend([lib, callback])
                lib.av_log_set_callback(ctypes.cast(callback, ctypes.c_void_p))
                atexit.register(_restore, lib)
                installed = True
        except (OSError, AttributeError):  # no such library or symbol: fall back to silence
            log.debug("decoder log capture unavailable", exc_info=True)
        if not installed:
            import decord

            decord.logging.set_level(decord.logging.QUIET)
        _state.installed = installed
        return installed


def _restore(lib: ctypes.CDLL) -> None:
    """At exit: no calls into an interpreter that is shutting down; stay quiet rather than print."""
    try:
        lib.av_log_set_level(AV_LOG_QUIET)
        lib.av_log_set_callback(ctypes.cast(lib.av_log_default_callback, ctypes.c_void_p))
    except (OSError, AttributeError):
        pass


def errors() -> int:
    """Error-level decoder messages so far in this process (compare before and after a read)."""
    with _lock:
        return _state.errors


def settle(quiet_s: float = 0.03, max_wait_s: float = 0.3) -> None:
    """Wait (briefly) until no error has been logged for `quiet_s`: decoder threads finishing work
    from an earlier read log after that read has returned."""
    import time

    deadline = time.monotonic() + max_wait_s
    seen = errors()
    while time.monotonic() < deadline:
        time.sleep(quiet_s)
        now = errors()
        if now == seen:
            return
        seen = now


def last_error() -> str:
    with _lock:
        return _state.last


@contextmanager
def stderr_to_log(what: str = "decoder") -> Iterator[None]:
    """Send whatever C code writes to file descriptor 2 inside the block to the debug log.

    For short calls only: anything else the process writes to stderr meanwhile goes there too."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all: nothing to protect
        yield
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read(64 * 1024).decode("utf-8", errors="replace").strip()
            if text:
                log.debug("%s (stderr): %s", what, text)
