"""Uploads: a multipart/form-data body streamed to disk as it arrives, with the caps checked as it comes.

FastAPI's `UploadFile` receives the whole body (spooled to a temporary file) before the route
runs, so a 5 GB upload over a 500 MB cap would be read in full first, and copied again after.
Here python-multipart's streaming parser takes the request body chunk by chunk: each file part
goes straight into a file the server names, its size is checked on every chunk (over the cap:
413 at once, the partial file deleted), and text fields are small and few.

What a file is comes from its content (`stages.media_sniff`), never from the client's file name
or content type; the client's file name is kept for display only, sanitised.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from fastapi import HTTPException, Request
from python_multipart.multipart import MultipartParser, parse_options_header

from deepfake_detect.stages.media_sniff import sniff

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

MAX_FIELDS = 16           # text fields per request
MAX_FIELD_BYTES = 1024    # per text field
MAX_FILE_PARTS = 100      # file parts per request, kept or not
FORM_OVERHEAD = 1024**2   # part headers and fields, on top of the files' bytes

# a name for the upload's file by what it holds (the decoders sniff again; the suffix is for people)
SUFFIXES = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "WebP": ".webp", "TIFF": ".tif", "BMP": ".bmp",
            "AVIF": ".avif", "HEIF": ".heic", "MP4": ".mp4", "QuickTime": ".mov", "Matroska/WebM": ".mkv",
            "AVI": ".avi", "FLV": ".flv", "ASF/WMV": ".wmv", "MPEG": ".mpg", "MPEG-TS": ".ts"}


@dataclass
class ReceivedFile:
    filename: str            # the client's name, sanitised: for display only
    path: Path | None        # where it was written; None for a file past `keep_files` (not stored)
    size: int = 0


@dataclass
class ReceivedForm:
    files: list[ReceivedFile] = field(default_factory=list)
    fields: dict[str, str] = field(default_factory=dict)


def display_name(raw: bytes) -> str:
    """The client's file name as something safe to show: no folders, no control characters, short."""
    name = raw.decode("utf-8", "replace").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip()
    return name[:200] or "upload"


def media_suffix(path: Path) -> tuple[str | None, str]:
    """(file suffix, "") for an image or a video; (None, why not) for anything else."""
    if path.stat().st_size == 0:
        return None, "the file is empty"
    sniffed = sniff(path)
    if sniffed.kind in ("image", "video"):
        return SUFFIXES.get(sniffed.format, ""), ""
    if sniffed.kind == "text":
        return None, "not an image or video: the content is text"
    if sniffed.kind == "audio":
        return None, "not an image or video: the content is audio"
    return None, "not an image or video this server recognises"


class _Receiver:
    """python-multipart callbacks that write file parts to disk and collect text fields."""

    def __init__(self, folder: Path, file_field: str, max_file_bytes: int, keep_files: int) -> None:
        self.folder, self.file_field, self.max_file_bytes, self.keep_files = folder, file_field, max_file_bytes, keep_files
        self.form = ReceivedForm()
        self._headers: dict[bytes, bytes] = {}
        self._header_name = self._header_value = b""
        self._field: str | None = None       # the text field being read
        self._value = bytearray()
        self._file: ReceivedFile | None = None
        self._sink: BinaryIO | None = None

    def callbacks(self) -> MultipartCallbacks:
        return {"on_part_begin": self.part_begin, "on_header_field": self.header_field,
                "on_header_value": self.header_value, "on_header_end": self.header_end,
                "on_headers_finished": self.headers_finished, "on_part_data": self.part_data,
                "on_part_end": self.part_end}

    def part_begin(self) -> None:
        self._headers = {}

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def header_end(self) -> None:
        self._headers[self._header_name.lower()] = self._header_value
        self._header_name = self._header_value = b""

    def headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = params.get(b"name", b"").decode("utf-8", "replace")
        if name == self.file_field:
            if len(self.form.files) >= MAX_FILE_PARTS:
                raise HTTPException(413, f"more than {MAX_FILE_PARTS} files in one request")
            n = len(self.form.files)
            self._file = ReceivedFile(display_name(params.get(b"filename", b"")), None)
            if n < self.keep_files:
                self._file.path = self.folder / f"upload-{n}.part"
                self._sink = open(self._file.path, "wb")
            self.form.files.append(self._file)
            return
        if len(self.form.fields) >= MAX_FIELDS:
            raise HTTPException(422, f"more than {MAX_FIELDS} form fields")
        self._field, self._value = name, bytearray()

    def part_data(self, data: bytes, start: int, end: int) -> None:
        if self._file is not None:
            self._file.size += end - start
            if self._file.size > self.max_file_bytes:
                raise HTTPException(413, f"{self._file.filename} is over the {self.max_file_bytes} byte upload cap")
            if self._sink is not None:
                self._sink.write(data[start:end])
            return
        self._value += data[start:end]
        if len(self._value) > MAX_FIELD_BYTES:
            raise HTTPException(422, f"form field {self._field!r} is over {MAX_FIELD_BYTES} bytes")

    def part_end(self) -> None:
        if self._sink is not None:
            self._sink.close()
        elif self._field is not None:
            self.form.fields[self._field] = self._value.decode("utf-8", "replace")
        self._file, self._sink, self._field = None, None, None

    def inside_part(self) -> bool:
        return self._file is not None or self._field is not None

    def discard(self) -> None:
        """Close and delete what was written: the request failed."""
        if self._sink is not None:
            self._sink.close()
        for received in self.form.files:
            if received.path is not None:
                with contextlib.suppress(OSError):
                    os.unlink(received.path)


async def receive_form(request: Request, folder: Path, file_field: str, max_file_bytes: int,
                       keep_files: int = 1) -> ReceivedForm:
    """Stream the request's multipart body: the first `keep_files` parts named `file_field` are
    written into `folder` (upload-N.part), later ones only counted; other parts are text fields.
    Raises HTTPException: 415 not multipart, 413 over a cap, 422 bad fields, 400 malformed."""
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise HTTPException(415, "send the file as multipart/form-data")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > keep_files * max_file_bytes + FORM_OVERHEAD:
        raise HTTPException(413, f"the upload is over the {max_file_bytes} byte cap")   # refused before it is read
    folder.mkdir(parents=True, exist_ok=True)
    receiver = _Receiver(folder, file_field, max_file_bytes, keep_files)
    parser = MultipartParser(boundary, receiver.callbacks())
    try:
        async for chunk in request.stream():
            if parser.write(chunk) != len(chunk):
                raise HTTPException(400, "malformed multipart body")
        parser.finalize()
        if receiver.inside_part():
            raise HTTPException(400, "the multipart body ends inside a part")
    except HTTPException:
        receiver.discard()
        raise
    except Exception as exc:  # python-multipart's parse errors, a client that went away
        receiver.discard()
        raise HTTPException(400, f"malformed multipart body: {type(exc).__name__}") from None
    return receiver.form
