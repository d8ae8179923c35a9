"""What a file holds, judged by its first bytes, never by its name.

A text file named `.mp4`, a PNG named `.mov`, an MP3 named `.mp4` and a video without a suffix all
go where their content says. Only signatures that the formats define are used (the magic numbers
that `file(1)` and the decoders themselves check); anything not recognised here is handed to
ffmpeg, which knows many more containers, and refused only if ffmpeg cannot open it either.
Text is refused before any demuxer sees it: playlists (HLS `.m3u8`, ffconcat) are text, and a
demuxer that follows one reads other files or URLs.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Kind = Literal["image", "video", "audio", "text", "unknown"]

HEAD_BYTES = 4096

# ISO base media (MP4/MOV/HEIF) brands of still images and image sequences (HEIF, AVIF)
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avif", b"avis", b"mif2"}
_QUICKTIME_ATOMS = {b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot", b"uuid"}
_BMP_HEADER_SIZES = {12, 40, 52, 56, 64, 108, 124}


@dataclass(frozen=True)
class Sniffed:
    kind: Kind
    format: str   # a short name for messages ("PNG", "MP4", "text", ...); "" when unknown


def _is_text(head: bytes) -> bool:
    if not head or b"\x00" in head:
        return False
    text = head.decode("utf-8", errors="replace")
    printable = sum(ch.isprintable() or ch in "\t\r\n\f\v" for ch in text)
    return printable >= 0.95 * len(text)


def _mpeg_ts(head: bytes, packet: int, offset: int = 0) -> bool:
    positions = [offset + k * packet for k in range(3)]
    return len(head) > positions[-1] and all(head[p] == 0x47 for p in positions)


def sniff_bytes(head: bytes) -> Sniffed:
    """The kind of media whose file starts with `head` (a few KB are enough)."""
    if head.startswith(b"\xff\xd8\xff"):
        return Sniffed("image", "JPEG")
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return Sniffed("image", "PNG")
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return Sniffed("image", "GIF")
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return Sniffed("image", "WebP")
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return Sniffed("image", "TIFF")
    if head[:2] == b"BM" and len(head) >= 18 and int.from_bytes(head[14:18], "little") in _BMP_HEADER_SIZES:
        return Sniffed("image", "BMP")
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _HEIF_BRANDS:
            return Sniffed("image", "AVIF" if brand.startswith(b"avi") else "HEIF")
        return Sniffed("video", "MP4")  # or audio only (.m4a): ffmpeg lists the streams
    if head[4:8] in _QUICKTIME_ATOMS and len(head) >= 8:
        return Sniffed("video", "QuickTime")
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return Sniffed("video", "Matroska/WebM")
    if head[:4] == b"RIFF" and head[8:12] in (b"AVI ", b"AVIX"):
        return Sniffed("video", "AVI")
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return Sniffed("audio", "WAV")
    if head.startswith(b"FLV\x01"):
        return Sniffed("video", "FLV")
    if head.startswith(b"\x30\x26\xb2\x75\x8e\x66\xcf\x11"):
        return Sniffed("video", "ASF/WMV")
    if head.startswith((b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3")):
        return Sniffed("video", "MPEG")
    if _mpeg_ts(head, 188) or _mpeg_ts(head, 192, 4):
        return Sniffed("video", "MPEG-TS")
    if head.startswith((b"ID3", b"fLaC", b"#!AMR", b"MAC ", b"wvpk")):  # MP3 without a tag goes to ffmpeg
        return Sniffed("audio", "audio")
    if _is_text(head):
        return Sniffed("text", "text")
    return Sniffed("unknown", "")


def sniff(path: str | Path) -> Sniffed:
    """Read the first bytes of `path` and say what it holds (OSError if it cannot be read)."""
    with open(path, "rb") as fh:
        return sniff_bytes(fh.read(HEAD_BYTES))
