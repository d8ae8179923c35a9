"""Evaluate a detector on labelled media: frame and video level, each member and the ensemble.

Faces come from the same decode/detect stages as `analyze` (cached like training); video scores
come from the aggregate stage's track strategies, so the numbers describe what users get.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from stages.aggregate import TRACK_STRATEGIES, AggregateSettings
from stages.detect import DetectSettings, FaceDetector
from stages.ensemble import EnsembleDetector
from training.data import MediaItem, extract_all, read_dataset
from training.metrics import binary_metrics, bootstrap_auc_interval, save_plots
from training.train import member_logits

Log = Callable[[str], None]


def select_items(data: str | Path, splits: list[str] | None, holdout_split_file: str | Path | None) -> list[MediaItem]:
    """Items of the chosen splits, plus real items of identities a training run held out."""
    items = read_dataset(data)
    held: set[str] = set()
    if holdout_split_file:
        held = set(json.loads(Path(holdout_split_file).read_text())["holdout"])
    return [i for i in items if (not splits or i.split in splits) or (i.identity in held and i.label == 0)]


def _scores(model: EnsembleDetector, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    logits = np.stack([member_logits(m, crops) for m in model.members.values()], axis=1)
    with torch.no_grad():
        ens = model.combine(torch.from_numpy(logits)).numpy()
    return ens, 1 / (1 + np.exp(-logits))


def _metrics(labels: np.ndarray, scores: np.ndarray, threshold: float, groups: np.ndarray | None = None) -> dict:
    """binary_metrics plus the AUC's bootstrap interval (resampling `groups`: the items frames came from)."""
    return {**binary_metrics(labels, scores, threshold), "roc_auc_ci95": bootstrap_auc_interval(labels, scores, groups)}


def evaluate(model: EnsembleDetector, items: list[MediaItem], out_dir: Path, cache_dir: Path,
             frames_per_video: int = 16, log: Log = print) -> dict:
    """Metrics JSON (also written to out_dir/metrics.json) and PNG plots."""
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    faces = extract_all(items, FaceDetector(DetectSettings(min_confidence=0.9)), cache_dir, frames_per_video)
    names = list(cfg.members) + ["ensemble"]
    frame = {n: ([], []) for n in names}
    frame_item: list[int] = []  # which item each frame score came from: the bootstrap resamples items
    per_item = []
    for item in items:
        fs = faces.get(item.path)
        if fs is None or not len(fs):
            per_item.append({"path": str(item.path), "label": item.label, "group": item.group, "faces": 0})
            continue
        # Crops cut as `analyze` cuts them by default: with the margin the detector was trained with.
        ens, members = _scores(model, fs.crops(cfg.crop_margin, cfg.input_size))
        columns = {**{n: members[:, k] for k, n in enumerate(cfg.members)}, "ensemble": ens}
        frame_item.extend([len(per_item)] * len(ens))
        for n in names:
            frame[n][0].extend([item.label] * len(ens))
            frame[n][1].extend(columns[n].tolist())
        settings = AggregateSettings(threshold=cfg.threshold)
        per_item.append({"path": str(item.path), "label": item.label, "group": item.group, "kind": item.kind,
                         "faces": len(ens), **{f"{n}_{s}": TRACK_STRATEGIES[s](columns[n], settings)
                                               for n in names for s in TRACK_STRATEGIES}})
    result: dict = {"threshold": cfg.threshold, "combiner": cfg.combiner, "items": len(items),
                    "items_without_faces": sum(1 for p in per_item if not p["faces"]), "frame": {}, "video": {},
                    "groups": {}}
    frame_groups = np.array(frame_item)
    for n in names:
        labels, scores = np.array(frame[n][0]), np.array(frame[n][1])
        result["frame"][n] = _metrics(labels, scores, cfg.threshold, frame_groups)
        if n == "ensemble":
            save_plots(labels, scores, cfg.threshold, out_dir, "frame_ensemble")
    videos = [p for p in per_item if p["faces"] and p.get("kind") in ("video", "frames")]
    video_labels = np.array([p["label"] for p in videos])
    for n in names:
        result["video"][n] = {s: _metrics(video_labels, np.array([p[f"{n}_{s}"] for p in videos]), cfg.threshold)
                              for s in TRACK_STRATEGIES} if videos else {}
    if videos:
        save_plots(video_labels, np.array([p["ensemble_confident"] for p in videos]), cfg.threshold, out_dir,
                   "video_ensemble")
    for group in sorted({p["group"] for p in per_item}):
        rows = [p for p in per_item if p["group"] == group and p["faces"]]
        if rows:
            scores = np.array([p["ensemble_confident"] for p in rows])
            result["groups"][group] = {"items": len(rows), "label": rows[0]["label"],
                                       "mean_score": float(scores.mean()),
                                       "share_flagged_fake": float((scores >= cfg.threshold).mean())}
    result["per_item"] = per_item
    (out_dir / "metrics.json").write_text(json.dumps(result, indent=1, default=float) + "\n")
    return result


def summary_lines(result: dict) -> list[str]:
    """A compact table for the terminal and the model card."""
    lines = ["| level | model | AUC [95 % CI] | accuracy | precision | recall | F1 | ECE | n |", "|---|---|---|---|---|---|---|---|---|"]

    def row(level: str, name: str, m: dict) -> str:
        fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
        ci = m.get("roc_auc_ci95")
        auc = fmt(m["roc_auc"]) + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")
        return (f"| {level} | {name} | {auc} | {fmt(m['accuracy'])} | {fmt(m['precision'])} | "
                f"{fmt(m['recall'])} | {fmt(m['f1'])} | {fmt(m['ece'])} | {m['count']} |")

    for name, m in result["frame"].items():
        lines.append(row("frame", name, m))
    for name, by_strategy in result["video"].items():
        for strategy, m in by_strategy.items():
            lines.append(row(f"video ({strategy})", name, m))
    return lines
