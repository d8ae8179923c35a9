"""A report to hand on: one self-contained HTML file per input (`analyze --html`, `render.html` for watch).

It is the page `serve` shows (core/web: the one place a result is rendered), with its stylesheet and
script inlined, the report as embedded JSON and every image (and an annotated video up to
MAX_INLINE_VIDEO) as a data: URL. A Content-Security-Policy forbids anything else, so it opens
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
MAX_INLINE_VIDEO = 25 * 2**20     # larger annotated videos stay beside the report, named in it
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


def _data_url(path: Path) -> str:
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def _files(report: AnalysisReport, base: Path) -> tuple[list[dict[str, str]], list[str]]:
    """The report's image and video outputs (relative ones under `base`) as data URLs; and notes on
    those left out."""
    inlined, notes = [], []
    for key, value in report.outputs.items():
        path = Path(value) if Path(value).is_absolute() else base / value
        if key == "report" or not path.is_file() or path.suffix.lower() not in (".png", ".jpg", ".jpeg", ".mp4", ".webm"):
            continue
        if path.suffix.lower() in (".mp4", ".webm") and path.stat().st_size > MAX_INLINE_VIDEO:
            notes.append(f"the annotated video ({path.name}, {path.stat().st_size / 2**20:.0f} MiB) is not inlined: "
                         "it is beside this report")
            continue
        inlined.append({"name": path.name, "kind": key, "url": _data_url(path)})
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
    # inside <script>, "</" would end the element early: JSON allows "<\/" for it
    embedded = json.dumps(job, ensure_ascii=False).replace("</", "<\\/")
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
