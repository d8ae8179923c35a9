"""A report to hand on: one self-contained HTML file per input (`analyze --html`, `render.html` for watch).

It is the page `serve` shows (core/web: the one place a result is rendered), with its stylesheet and
script inlined, the report as embedded JSON and every image as a data: URL (large ones as JPEG), and
the annotated video too where everything stays within PAGE_BUDGET. A Content-Security-Policy forbids anything else, so it opens
offline in any browser and never reaches the network. The model's limits are the model card's own
"In one line" paragraph, from the card beside the detector.
"""
from __future__ import annotations

import base64
import json
import mimetypes
import re
from importlib.resources import files
from pathlib import Path
from typing import Any

from deepfake_detect.pipeline.core.report import AnalysisReport, report_to_dict

REPORT_PAGE_DIR = Path(str(files("deepfake_detect.pipeline.core") / "web"))
PAGE_BUDGET = 3 * 2**20 - 256 * 2**10   # of inlined files, base64: with the page itself, under 3 MiB; an
                                        # annotated video that would pass it stays beside the page
JPEG_OVER = 200 * 2**10     # images larger than this are inlined as JPEG (quality 85): full-frame keyframe PNGs
JPEG_QUALITY = 85
CSP = ("default-src 'none'; img-src data:; media-src data:; style-src 'unsafe-inline'; "
       "script-src 'unsafe-inline'")
NO_CARD = "No model card beside this detector: nothing says how well it detects; do not trust its verdict alone."


def model_card_line(weights: str | Path) -> tuple[str, str]:
    """(the limits in one line, the whole card) of the detector in `weights` (MODEL_CARD.md beside it)."""
    card = Path(weights) / "MODEL_CARD.md"
    try:
        text = card.read_text(encoding="utf-8")
    except OSError:
        return NO_CARD, ""
    match = re.search(r"\*\*In one line:\*\*(.+?)(?:\n\s*\n|$)", text, re.S)
    line = match.group(1) if match else text.split("\n\n")[1] if "\n\n" in text else text
    line = re.sub(r"\s+", " ", line.replace("**", "")).strip()
    return line[:1].upper() + line[1:], text


def _data_url(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _image(path: Path) -> tuple[bytes, str]:
    """An image's bytes and type for inlining: as stored, or as JPEG when that is much smaller."""
    data = path.read_bytes()
    mime = mimetypes.guess_type(path.name)[0] or "image/png"
    if len(data) > JPEG_OVER and mime == "image/png":
        import cv2
        import numpy as np

        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]) if image is not None else (False, None)
        if ok and jpeg is not None and len(jpeg) < len(data):
            return jpeg.tobytes(), "image/jpeg"
    return data, mime


def _b64(n: int) -> int:
    return 4 * ((n + 2) // 3)


def _files(report: AnalysisReport, base: Path) -> tuple[list[dict[str, str]], list[str]]:
    """The report's images and (within PAGE_BUDGET) its annotated video, relative paths under `base`,
    as data URLs; and notes on what was left out."""
    images, videos = [], []
    for key, value in report.outputs.items():
        path = Path(value) if Path(value).is_absolute() else base / value
        if key == "report" or not path.is_file():
            continue
        suffix = path.suffix.lower()
        if suffix in (".png", ".jpg", ".jpeg"):
            images.append((key, path, *_image(path)))
        elif suffix in (".mp4", ".webm"):
            videos.append((key, path))
    inlined = [{"name": path.name, "kind": key, "url": _data_url(data, mime)} for key, path, data, mime in images]
    used, notes = sum(_b64(len(data)) for *_, data, _ in images), []
    for key, path in videos:
        size = path.stat().st_size
        if used + _b64(size) > PAGE_BUDGET:
            notes.append(f"the annotated video ({path.name}, {size / 2**20:.1f} MiB) is not inlined, to keep this page "
                         f"under 3 MiB: it is beside the report")
            continue
        used += _b64(size)
        inlined.append({"name": path.name, "kind": key, "url": _data_url(path.read_bytes(), "video/mp4")})
    return inlined, notes


def render_html(report: AnalysisReport, settings: dict[str, Any], weights: str | Path, base: Path = Path()) -> str:
    """The whole page for one report; `base`: where its relative output paths start."""
    limits, card = model_card_line(weights)
    inlined, notes = _files(report, base)
    data = report_to_dict(report)
    data["warnings"] = [*data["warnings"], *notes]
    job = {"id": None, "filename": Path(report.input.path).name, "state": "failed" if report.failed else "done",
           "verdict": report.verdict, "error": report.errors[0] if report.errors else None, "report": data,
           "files": inlined, "settings": settings, "limits": limits, "model_card": card}
    # inside <script>, "</" would end the element early and "<!--" would change how it is parsed: JSON
    # strings may spell <, > and & as \u escapes, so no markup character is left in the data
    embedded = (json.dumps(job, ensure_ascii=False).replace("<", "\\u003c").replace(">", "\\u003e")
                .replace("&", "\\u0026"))
    page = (REPORT_PAGE_DIR / "index.html").read_text(encoding="utf-8")
    css = (REPORT_PAGE_DIR / "style.css").read_text(encoding="utf-8")
    script = (REPORT_PAGE_DIR / "app.js").read_text(encoding="utf-8").replace("</", "<\\/")
    replacements = {
        '<link rel="stylesheet" href="/static/style.css">':
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n<style>\n{css}</style>',
        '<script src="/static/app.js" defer></script>\n': "",
        "<title>deepfake-detect</title>": f"<title>{_escape(Path(report.input.path).name)}: {report.verdict} "
                                          "(deepfake-detect report)</title>",
        "</body>": f'<script type="application/json" id="embedded-job">{embedded}</script>\n<script>\n{script}</script>\n'
                   "</body>",
    }
    for old, new in replacements.items():
        if old not in page:   # the page changed: fail here, not with a report that silently loads nothing
            raise RuntimeError(f"core/web/index.html no longer has {old.strip()!r}")
        page = page.replace(old, new, 1)
    # the server's model-card link: in the page itself, the card is embedded (its dialog opens it)
    return page.replace('href="/v1/model-card"', 'href="#model-card"')


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def html_path(report_path: Path) -> Path:
    """`clip.mp4.json` -> `clip.mp4.html`, beside it."""
    return report_path.with_suffix(".html")
