"""Turn the paths a user typed (files, folders, globs) into the media files to analyse.

In a folder, a file is taken when its suffix is a media suffix (any case), or when it has no
suffix and its content is an image or a video (camera dumps, exported files without a name
extension). Other files in a folder are left alone; a file named explicitly is always tried and
fails on its own with a one-line reason.
"""
from __future__ import annotations

import csv
import glob
import io
from dataclasses import dataclass, field
from pathlib import Path

from deepfake_detect.stages.decode import MEDIA_SUFFIXES
from deepfake_detect.stages.media_sniff import sniff


@dataclass
class InputList:
    files: list[Path] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)   # (what the user typed, why it gave nothing)


def looks_like_media(path: Path) -> bool:
    """A media suffix (any case), or no suffix and image or video content (the rule for folders,
    shared by `analyze` and the watch-folder daemon)."""
    if path.suffix.lower() in MEDIA_SUFFIXES:
        return True
    if path.suffix:
        return False
    try:
        return sniff(path).kind in ("image", "video")
    except OSError:
        return False


def _media_in(folder: Path) -> list[Path]:
    # sorted for a stable order; hidden files are skipped (partial downloads, editor droppings)
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and not p.name.startswith(".") and looks_like_media(p))


def expand_inputs(items: list[str] | tuple[str, ...]) -> InputList:
    """Files are taken whatever their suffix (a bad one fails on its own); folders give their media
    files recursively; a path that does not exist is tried as a glob pattern."""
    result = InputList()
    seen: set[Path] = set()

    def add(path: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            result.files.append(path)

    for item in items:
        path = Path(item)
        if path.is_dir():
            found = _media_in(path)
            if not found:
                result.problems.append((item, "no media files in this folder"))
            for f in found:
                add(f)
        elif path.exists() or path.is_symlink():
            add(path)
        elif glob.has_magic(item):
            matches = sorted(Path(m) for m in glob.glob(item, recursive=True))
            files = [m for m in matches if m.is_file()]
            if not files:
                result.problems.append((item, "no file matches this pattern"))
            for f in files:
                add(f)
        else:
            result.problems.append((item, "no such file or folder"))
    return result


def read_path_list(list_file: Path) -> list[str]:
    """The inputs listed in `list_file` (`analyze --from-list`), for `expand_inputs`: a CSV with a
    `path` column, or one path per line (blank lines and lines starting with `#` skipped).
    Relative paths are relative to the list's folder, so a list works from any directory."""
    # surrogateescape: a listed name that is not UTF-8 still names its file (os.fsencode round trip)
    text = Path(list_file).read_text(encoding="utf-8", errors="surrogateescape")
    lines = [line.strip() for line in text.splitlines()]
    header = next(csv.reader([next((line for line in lines if line), "")]), [])
    if "path" in (cell.strip().lower() for cell in header):
        rows = csv.DictReader(io.StringIO("\n".join(line for line in text.splitlines() if line.strip())))
        column = next(name for name in rows.fieldnames or [] if name.strip().lower() == "path")
        listed = [(row.get(column) or "").strip() for row in rows]
    else:
        listed = [line for line in lines if not line.startswith("#")]
    base = Path(list_file).parent
    return [str(base / item) for item in listed if item]
