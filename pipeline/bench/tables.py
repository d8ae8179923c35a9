"""The bench's figures as small text tables for people (`--json` gives the same figures to scripts)."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Right-aligned columns, two spaces apart."""
    lines = [list(header), *[list(r) for r in rows]]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(line, widths)) for line in lines)


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else spec.format(value)


def clip_table(rows: list[dict[str, Any]]) -> str:
    cols = [("clip", "{}"), ("size", "{}"), ("frames_analysed", "{}"), ("decode_only_s", "{:.2f}"),
            ("analyze_s", "{:.2f}"), ("provenance_ms", "{:.0f}"), ("analyze_over_decode", "{:.1f}x"), ("frames_per_s", "{:.1f}"),
            ("realtime_factor", "{:.1f}x"), ("peak_rss_analyze_mib", "{:.0f}"), ("render_fps", "{:.1f}"),
            ("peak_rss_render_mib", "{:.0f}")]
    return table([name for name, _ in cols], [[_fmt(r.get(name), spec) for name, spec in cols] for r in rows])


def naive_lines(naive: dict[str, Any]) -> str:
    return table(["loop", "frames", "faces", "seconds", "frames/s"], [
        ["naive (seek, full-res MTCNN, 1 crop/forward)", str(naive["frames"]), str(naive["faces"]),
         f"{naive['naive_s']:.2f}", f"{naive['frames_per_s']:.1f}"],
        ["pipeline (warm analysis)", str(naive["pipeline_frames"]), str(naive["pipeline_faces"]),
         f"{naive['pipeline_s']:.2f}", f"{naive['pipeline_frames'] / naive['pipeline_s']:.1f}"],
    ]) + f"\nnaive / pipeline: {naive['ratio']:.1f}x on {naive['clip']}"


def cold_lines(cold: dict[str, Any]) -> str:
    rows = [[" ".join(cold[key]["args"][:2]) if key != "analyze" else f"analyze {cold['clip']} --no-render",
             str(len(cold[key]["runs_s"])), f"{cold[key]['min_s']:.2f}", f"{cold[key]['median_s']:.2f}"]
            for key in ("analyze", "help", "watch_status")]
    return table(["cold CLI (whole process)", "runs", "min s", "median s"], rows)


def concurrent_lines(conc: dict[str, Any]) -> str:
    def row(label: str, part: dict[str, Any]) -> list[str]:
        threads = f"{part['threads']['compute']} compute / {part['threads']['decode']} decode"
        return [label, threads, f"{part['wall_s']:.2f}", " ".join(f"{s:.2f}" for s in part["each_s"])]

    verdict = "within" if conc["within_target"] else "OVER"
    return (table(["processes", "threads each", "wall s", "each analysis s"],
                  [row("one alone", conc["alone"]), row("two at once", conc["both"])])
            + f"\ntwo at once / one alone: {conc['ratio']:.2f}x ({verdict} the {conc['target']}x target) on {conc['clip']}")


def no_loss_lines(check: dict[str, Any]) -> str:
    rows = [[r["clip"], f"{r['faces']['onnx']} / {r['faces']['torch']}", f"{r['tracks']['onnx']} / {r['tracks']['torch']}",
             f"{r['max_face_score_diff']:.1e}", _fmt(r["video_score_diff"], "{:.1e}"), f"{r['max_box_diff_px']:.3f}",
             f"{r['analyze_s']['onnx']:.2f}", f"{r['analyze_s']['torch']:.2f}", f"{r['onnx_speedup']:.2f}x"]
            for r in check["clips"]]
    return table(["no-loss check", "faces onnx/torch", "tracks", "max face score diff", "video score diff",
                  "max box diff px", "onnx s", "torch s", "onnx speed-up"], rows)


def engines_lines(engines: dict[str, Any]) -> str:
    rows = [[r["engine"], str(r["workers"]), str(r["files"]), f"{r['files_per_s']:.2f}", f"{r['per_file_s']:.2f}",
             f"{r['overhead_per_file_s']:+.2f}", f"{r['startup_s']:.1f}", f"{r['ready_s']:.1f}"]
            for r in engines["rows"]]
    return (table(["engine", "workers", "files", "files/s", "s/file", "overhead s/file", "ray start s", "workers ready s"],
                  rows) + f"\n{engines['files']} copies of {engines['clip']}, rendering off")


def architectures_lines(arch: dict[str, Any]) -> str:
    rows = [[r["architecture"], str(r["input"]), f"{r['params_m']:.1f}", f"{r['onnx_mib']:.0f}",
             f"{r['torch_crops_per_s']:.1f}", f"{r['onnx_crops_per_s']:.1f}", f"{r['max_prob_diff']:.1e}"]
            for r in arch["rows"]]
    return (table(["architecture", "input px", "params M", "onnx MiB", "torch crops/s", "onnx crops/s",
                   "max prob diff"], rows)
            + f"\n{arch['crops']} random crops each, {arch['threads']} threads, random weights")


def print_tables(result: dict[str, Any], say: Callable[[str], None]) -> None:
    say("\n" + clip_table(result["rows"]))
    for key, lines in (("naive", naive_lines), ("no_loss", no_loss_lines), ("cold_cli", cold_lines),
                       ("concurrent", concurrent_lines), ("engines", engines_lines),
                       ("architectures", architectures_lines)):
        if result.get(key):
            say("\n" + lines(result[key]))
    for key, reason in result["skipped"].items():
        say(f"{key}: skipped ({reason})")
