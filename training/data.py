"""Labelled media for training and evaluation, and face extraction with the pipeline's own stages.

Two input forms: a manifest TSV (columns path, split, label, kind, identity, source_repo, ...;
the format of the project's shared data) or a folder with `real/` and `fake/` sub-folders.
Faces are found by the same decode and detect stages as `analyze` uses and cached per file as a
context crop (twice the face box) plus box and landmarks in crop coordinates, so the training
crop is cut exactly as inference cuts it, and self-blending has room around the face.
"""
from __future__ import annotations

import csv
import functools
import hashlib
import inspect
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepfake_detect.stages.crop import REGIONS, crop_face, crop_region, crop_square, square_crop_box
from deepfake_detect.stages.decode import IMAGE_SUFFIXES, MEDIA_SUFFIXES, DecodeLimits, MediaError, Sampling, open_media
from deepfake_detect.stages.detect import Face, FaceDetector

CONTEXT_MARGIN = 1.0   # context crop = face box enlarged 2x
CONTEXT_SIZE = 320


@dataclass(frozen=True)
class MediaItem:
    path: Path
    label: int            # 1 fake, 0 real
    identity: str
    split: str            # as given by the data ("train", "dev", ...) or "" for folder data
    kind: str             # "video" | "image" | "frames" (a folder of numbered frames)
    group: str            # generator family ("none" for real), for per-family tables and balanced sampling
    region: str = ""      # "" whole frame | left_half | right_half: the labelled half of a side-by-side file
    original: Path | None = None  # a fake's own real source, where the manifest names it (`original` column)
    source: str = ""      # where the file comes from (the manifest's source_repo): a dataset, a demo page


def _identity(row: dict) -> str:
    if row.get("identity"):
        return row["identity"]
    mead = re.match(r"([MW]\d{3})_", Path(row["path"]).name)  # MEAD actors: M030_front_angry_...
    if mead:
        return f"MEAD {mead.group(1)}"
    return f"{row.get('source_repo', '')}:{Path(row['path']).stem}"


def read_manifest(tsv: str | Path) -> list[MediaItem]:
    """Items of a manifest TSV; relative paths are taken from the manifest's folder."""
    tsv = Path(tsv)
    items = []
    try:
        with open(tsv, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
    except (UnicodeDecodeError, csv.Error):   # binary bytes, or a "field" longer than csv allows
        raise ValueError(f"{tsv}: not a manifest (a tab-separated text file with columns path, label, ...)") from None
    for number, row in enumerate(rows, 2):   # line 1 is the header
        missing = [c for c in ("path", "label") if not isinstance(row.get(c), str)]
        if missing:
            raise ValueError(f"{tsv}: line {number} has no {' or '.join(missing)} column")
        path = tsv.parent / row["path"]
        kind = "frames" if path.is_dir() else ("image" if path.suffix.lower() in IMAGE_SUFFIXES else "video")
        region = (row.get("region") or "").strip()
        if region not in REGIONS:
            raise ValueError(f"{tsv}: {row['path']}: unknown region {region!r} (known: left_half, right_half)")
        original = (row.get("original") or "").strip()
        items.append(MediaItem(path=path, label=int(row["label"].strip().lower() == "fake"),
                               identity=_identity(row), split=row.get("split") or "", kind=kind,
                               group=row.get("manipulation") or row.get("label", ""), region=region,
                               original=tsv.parent / original if original else None,
                               source=(row.get("source_repo") or "").strip()))
    return items



def read_folder_dataset(root: str | Path) -> list[MediaItem]:
    """`root/real/**` and `root/fake/**` media files; each file is its own identity."""
    root = Path(root)
    return _media_items(root / "real", 0, "real") + _media_items(root / "fake", 1, "fake")


def _media_items(folder: Path, label: int, label_name: str) -> list[MediaItem]:
    items = []
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix.lower() in MEDIA_SUFFIXES:
            kind = "image" if path.suffix.lower() in IMAGE_SUFFIXES else "video"
            items.append(MediaItem(path, label, f"{label_name}/{path.stem}", "", kind, label_name))
    return items


def read_real_items(source: str | Path) -> list[MediaItem]:
    """The real items of a manifest or of a real/ fake/ folder; a plain folder's media files are all real."""
    source = Path(source)
    if source.is_file() and source.suffix.lower() in MEDIA_SUFFIXES:
        raise ValueError(f"{source}: expected a folder of real media or a manifest .tsv, not one media file")
    labelled = source.is_file() or (source / "MANIFEST.tsv").is_file() or any(
        (source / name).is_dir() for name in ("real", "fake"))
    if not labelled:
        if not source.is_dir():
            raise FileNotFoundError(f"{source}: no such file or folder")
        return _media_items(source, 0, "real")
    return [item for item in read_dataset(source) if item.label == 0]


def read_dataset(source: str | Path) -> list[MediaItem]:
    source = Path(source)
    if source.is_file():
        return read_manifest(source)
    if (source / "MANIFEST.tsv").is_file():
        return read_manifest(source / "MANIFEST.tsv")
    if (source / "real").is_dir() or (source / "fake").is_dir():
        return read_folder_dataset(source)
    raise FileNotFoundError(f"{source}: expected a manifest .tsv or a folder with real/ and fake/")


@dataclass
class FaceSet:
    """The main face of each sampled frame of one item, as context crops."""

    contexts: np.ndarray    # (K, C, C, 3) uint8
    boxes: np.ndarray       # (K, 4) face box in context-crop pixels
    landmarks: np.ndarray   # (K, 5, 2) in context-crop pixels
    frame_indices: np.ndarray  # (K,)
    landmarks68: np.ndarray | None = None  # (K, 68, 2) in context-crop pixels, where asked for (self-blend masks)

    def __len__(self) -> int:
        return len(self.contexts)

    def crops(self, margin: float, size: int) -> np.ndarray:
        """Classifier crops cut exactly as the detect stage cuts them at inference."""
        if not len(self):
            return np.zeros((0, size, size, 3), np.uint8)
        return np.stack([crop_face(c, b, margin, size) for c, b in zip(self.contexts, self.boxes)])


def _context(frame: np.ndarray, face: Face) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x1, y1, x2, y2 = crop_square(face.box, CONTEXT_MARGIN, *frame.shape[:2])
    scale = CONTEXT_SIZE / (x2 - x1)
    ctx = crop_face(frame, face.box, CONTEXT_MARGIN, CONTEXT_SIZE)
    offset = np.array([x1, y1], np.float32)
    box = ((face.box.reshape(2, 2) - offset) * scale).reshape(4)
    return ctx, box.astype(np.float32), ((face.landmarks - offset) * scale).astype(np.float32)


def _read_frames(item: MediaItem, frames_per_video: int, limits: DecodeLimits) -> tuple[np.ndarray, list[np.ndarray]]:
    if item.kind == "frames":
        files = sorted(p for p in item.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        pick: np.ndarray | list[int] = (
            np.unique(np.linspace(0, len(files) - 1, min(frames_per_video, len(files))).round().astype(int)) if files else [])
        frames = [open_media(files[i], limits).read(np.array([0]))[0] for i in pick]
        return np.asarray(pick, dtype=np.int64), frames
    reader = open_media(item.path, limits)
    indices = reader.sample(Sampling("count", frames_per_video))
    return indices, list(reader.read(indices))


def _content_digest(path: Path) -> str:
    """sha1 of the bytes (of each file, by name, for a folder of frames): a copied or re-downloaded
    dataset, with new paths and times, still finds its faces (hashing 200 MB takes ~0.5 s)."""
    digest = hashlib.sha1()
    for file in sorted(path.iterdir()) if path.is_dir() else [path]:
        if file.is_file():
            digest.update(file.name.encode() if path.is_dir() else b"")
            with open(file, "rb") as fh:
                digest.update(hashlib.file_digest(fh, "sha1").digest())
    return digest.hexdigest()


@functools.cache  # the source does not change while a process lasts: read it once
def extraction_digest() -> str:
    """What a cached face set was made with, derived from the code that makes it: frame sampling,
    the context crop's geometry and the extraction itself. Any change there makes new entries
    instead of reusing stale ones (the hand-kept version number this replaces was easy to forget).
    Only the crop functions extraction calls count: hashing all of stages/crop.py threw away an
    hour of extracted faces when an unrelated crop policy was added beside them."""
    used = (square_crop_box, crop_square, crop_face, crop_region, _context, _read_frames, extract_faces)
    parts = [*(inspect.getsource(f) for f in used),
             f"{REGIONS}|{CONTEXT_MARGIN}|{CONTEXT_SIZE}"]
    return hashlib.sha1("".join(parts).encode()).hexdigest()[:16]


def _cache_key(item: MediaItem, frames_per_video: int, detector: FaceDetector) -> str:
    """The cache entry of one item's faces: its content, how it was sampled, which faces the detector
    keeps (its name and thresholds) and the code that cut them."""
    s = detector.settings
    raw = (f"{extraction_digest()}|{_content_digest(item.path)}|{frames_per_video}|{item.region}|"
           f"{s.detector}|{s.detect_long_side}|{s.min_face_size}|{s.min_confidence}")
    return hashlib.sha1(raw.encode()).hexdigest()[:20]


def _save_faces(cache: Path, face_set: FaceSet) -> None:
    cache.parent.mkdir(parents=True, exist_ok=True)
    partial = cache.with_suffix(".partial.npz")  # written whole, then renamed: a crash leaves no half entry
    arrays: dict[str, np.ndarray] = {"contexts": face_set.contexts, "boxes": face_set.boxes, "landmarks": face_set.landmarks,
                                     "frame_indices": face_set.frame_indices}
    if face_set.landmarks68 is not None:
        arrays["landmarks68"] = face_set.landmarks68
    np.savez(partial, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds by its allow_pickle
    partial.replace(cache)


def _with_landmarks68(face_set: FaceSet, cache: Path) -> FaceSet:
    """The face set with its 68-point landmarks, computed once from the cached context crops and
    stored in the same cache entry (no decoding or face detection again)."""
    if face_set.landmarks68 is None:
        from deepfake_detect.training.landmarks68 import landmarks68

        face_set.landmarks68 = (landmarks68(face_set.contexts, face_set.boxes) if len(face_set)
                                else np.zeros((0, 68, 2), np.float32))
        _save_faces(cache, face_set)
    return face_set


def extract_faces(item: MediaItem, detector: FaceDetector, cache_dir: Path, frames_per_video: int = 16,
                  limits: DecodeLimits = DecodeLimits(), with_landmarks68: bool = False) -> FaceSet:
    """The largest confident face of each sampled frame, cached on disk by file identity; with
    `with_landmarks68`, also dlib's 68 points of each face (training/landmarks68.py)."""
    cache = Path(cache_dir) / f"{_cache_key(item, frames_per_video, detector)}.npz"
    if cache.is_file():
        try:
            with np.load(cache) as data:
                marks68 = data["landmarks68"] if with_landmarks68 and "landmarks68" in data.files else None
                cached = FaceSet(data["contexts"], data["boxes"], data["landmarks"], data["frame_indices"], marks68)
            return _with_landmarks68(cached, cache) if with_landmarks68 else cached
        except (OSError, ValueError, KeyError, EOFError):  # a damaged entry is rebuilt, not fatal
            cache.unlink(missing_ok=True)
    indices, frames = _read_frames(item, frames_per_video, limits)
    contexts, boxes, marks, kept = [], [], [], []
    for index, frame in zip(indices, frames):
        frame = crop_region(frame, item.region)
        faces = detector.detect(frame[None])[0]
        if not faces:
            continue
        face = max(faces, key=lambda f: f.size)  # the subject, not a face in the background
        ctx, box, lm = _context(frame, face)
        contexts.append(ctx)
        boxes.append(box)
        marks.append(lm)
        kept.append(index)
    size = CONTEXT_SIZE
    face_set = FaceSet(np.stack(contexts) if contexts else np.zeros((0, size, size, 3), np.uint8),
                       np.array(boxes, np.float32).reshape(-1, 4), np.array(marks, np.float32).reshape(-1, 5, 2),
                       np.array(kept, np.int64))
    _save_faces(cache, face_set)
    return _with_landmarks68(face_set, cache) if with_landmarks68 else face_set


def extract_all(items: Iterable[MediaItem], detector: FaceDetector, cache_dir: Path, frames_per_video: int = 16,
                progress: bool = True, with_landmarks68: bool = False) -> dict[Path, FaceSet]:
    """Faces of every item; unreadable items are reported and skipped."""
    from tqdm import tqdm

    out: dict[Path, FaceSet] = {}
    items = list(items)
    for item in tqdm(items, desc="faces", unit="file", disable=not progress):
        try:
            out[item.path] = extract_faces(item, detector, cache_dir, frames_per_video,
                                           with_landmarks68=with_landmarks68 and item.label == 0)
        except (MediaError, OSError) as exc:
            tqdm.write(f"skipped {item.path}: {exc}")
    return out


def split_by_identity(items: list[MediaItem], holdout_share: float, seed: int) -> tuple[set[str], set[str]]:
    """Deterministic identity split: (train identities, held-out identities)."""
    identities = sorted({i.identity for i in items})
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(identities))
    n_hold = max(1, int(round(holdout_share * len(identities))))
    held = {identities[i] for i in order[:n_hold]}
    return set(identities) - held, held


SPLIT_FILE = "split.json"  # a run's identity split, beside its detector


def save_split(path: Path, train_ids: set[str], held_ids: set[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"train": sorted(train_ids), "holdout": sorted(held_ids)}, indent=1) + "\n")


def load_split(path: str | Path) -> tuple[set[str], set[str]]:
    """(trained identities, held-out identities) of a run's split.json (`save_split`)."""
    split = json.loads(Path(path).read_text())
    return set(split["train"]), set(split["holdout"])
