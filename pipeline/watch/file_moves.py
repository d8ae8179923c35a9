"""File-system helpers of the watch daemon: safe display of odd names, containment, moves that
never overwrite and never lose the content (rename, or copy + fsync + rename across file systems)."""
from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
from pathlib import Path

from deepfake_detect.pipeline.core.journal import display_path
from deepfake_detect.stages.ensemble import file_sha256


def shown_path(path) -> str:
    """A path for one log line: control characters (a newline in a file name) escaped."""
    return re.sub(r"[\x00-\x1f\x7f]", lambda m: f"\\x{ord(m.group()):02x}", display_path(path))


def is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def with_suffix_number(path: Path, n: int) -> Path:
    suffix = "".join(path.suffixes[-1:])
    return path.with_name(f"{path.name[:len(path.name) - len(suffix)]}-{n}{suffix}")


def same_file_content(a: Path, b: Path, sha256: str | None) -> bool:
    try:
        if os.path.islink(a) or os.path.islink(b):
            return os.path.islink(a) and os.path.islink(b) and os.readlink(a) == os.readlink(b)
        return (os.path.getsize(a) == os.path.getsize(b) and sha256 is not None
                and file_sha256(b) == sha256 and file_sha256(a) == sha256)
    except OSError:
        return False


def move_file(src: Path, dest: Path, tag: str) -> None:
    """Move src to dest (which must not exist): rename on one file system, else copy + fsync +
    rename into place + unlink the source. A symlink moves as a link; its target is not touched."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if os.path.lexists(dest):
        raise FileExistsError(errno.EEXIST, "destination exists", str(dest))
    try:
        os.rename(src, dest)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    tmp = dest.with_name(f".{dest.name}.{tag}.partial")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    if os.path.islink(src):
        os.symlink(os.readlink(src), tmp)
    else:
        shutil.copy2(src, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
    os.rename(tmp, dest)
    os.unlink(src)   # the content now lives at dest: this is the second half of a move
