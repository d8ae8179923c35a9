"""Evaluate a detector on labelled media with exactly the scoring path users get from `analyze`.

Every item goes through the same `Analyzer` as `deepfake-detect analyze` (decode, MTCNN with the
same settings, crops cut with the detector's own margin and size, the same classifier code, the
same tracks and aggregation). Nothing is re-cropped or re-resampled here: the numbers describe
what a user would get for the same file. Side-by-side files are cut to their labelled half first.

Levels:
- frame: the largest face of each analysed frame (as training takes it);
- item: the score `analyze` reports (the most fake counted person), for images and videos;
- video: the same for videos only, under each track strategy (to choose the strategy on data).
Per family: each generator family's items against the real items of the same kind (videos against
real videos, images against real photos), with a bootstrap interval. Pairs: a fake whose identity
also has a real item (an FF++ fake and its own original) wins when it scores higher.
Quality baselines: the same AUCs for two numbers that know nothing of manipulation (the faces'
sharpness and size, medians per item), beside the detector's. Where they separate a set's fakes from
its reals, the set can be told apart by image quality, and the detector's AUC there may be reading it.
"""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from deepfake_detect.stages.aggregate import TRACK_STRATEGIES, AggregateSettings, most_fake
from deepfake_detect.training.data import MediaItem, load_split, read_dataset
from deepfake_detect.training.metrics import binary_metrics, bootstrap_auc_interval, save_plots

Log = Callable[[str], None]


class ReportLike(Protocol):
    """What evaluate reads of a `pipeline.core.report.AnalysisReport` (read-only)."""

    @property
    def verdict(self) -> str: ...
    @property
    def score(self) -> float | None: ...
    @property
    def tracks(self) -> list: ...
    @property
    def errors(self) -> list[str]: ...


class ScoresFiles(Protocol):
    """What evaluate needs of `pipeline.core.runner.Analyzer`: one report per file."""

    @property
    def aggregate_settings(self) -> AggregateSettings: ...
    @property
    def member_names(self) -> list[str]: ...

    def analyze(self, path: str | Path, out_dir: Path | None = None, progress: Callable[[int, int], None] | None = None,
                region: str = "") -> ReportLike: ...


def select_items(data: str | Path, splits: list[str] | None, holdout_split_file: str | Path | None) -> list[MediaItem]:
    """Items of the chosen splits, plus real items of identities a training run held out."""
    items = read_dataset(data)
    held: set[str] = set()
    if holdout_split_file:
        held = load_split(holdout_split_file)[1]
    return [i for i in items if (not splits or i.split in splits) or (i.identity in held and i.label == 0)]


def never_trained_items(items: list[MediaItem], split_file: str | Path) -> list[MediaItem]:
    """What a training run never saw, by its split.json: the real items of its held-out identities,
    and the fakes of every family none of whose items belongs to an identity it trained on (a second
    set of unseen generators beside dev, from the training data itself)."""
    trained, held = load_split(split_file)
    trained_families = {i.group for i in items if i.label == 1 and i.identity in trained}
    return [i for i in items if (i.label == 0 and i.identity in held) or (i.label == 1 and i.group not in trained_families)]


def _metrics(labels: np.ndarray, scores: np.ndarray, threshold: float, groups: np.ndarray | None = None) -> dict:
    """binary_metrics plus the AUC's bootstrap interval (resampling `groups`: the items frames came from)."""
    return {**binary_metrics(labels, scores, threshold), "roc_auc_ci95": bootstrap_auc_interval(labels, scores, groups)}


def _face_px(box: Sequence[float]) -> float:
    """A face's size: the long side of its box, in frame pixels."""
    return float(max(box[2] - box[0], box[3] - box[1]))


def _largest_face_per_frame(tracks: Sequence) -> list:
    best: dict[int, tuple[Any, Any]] = {}  # frame index -> (face size, face)
    for track in tracks:
        for face in track.faces:
            size = _face_px(face.box)
            if face.frame_index not in best or size > best[face.frame_index][0]:
                best[face.frame_index] = (size, face)
    return [best[k][1] for k in sorted(best)]


def _item_scores(report: ReportLike, names: list[str], settings: AggregateSettings) -> dict[str, float]:
    """Each model's item score under each track strategy: the most fake counted track, as `aggregate` does."""
    counted = [t for t in report.tracks if t.counted]
    out = {}
    for name in names:
        for strategy, fn in TRACK_STRATEGIES.items():
            per_track = [fn(np.array([f.score if name == "ensemble" else f.member_scores[name] for f in t.faces]),
                            settings) for t in counted]
            out[f"{name}_{strategy}"] = most_fake(per_track)
    return out


# Item-level numbers that know nothing of manipulation: "higher = more fake" as a baseline detector.
QUALITY_BASELINES = {"sharpness": "face sharpness (variance of the Laplacian)", "face_px": "face size (px)"}


def _item_quality(faces: list[dict]) -> dict[str, float]:
    """The median of each quality measure over an item's faces (measures a report lacks are left out)."""
    return {m: float(np.median([f[m] for f in faces])) for m in QUALITY_BASELINES
            if faces and all(f.get(m) is not None for f in faces)}


def data_root(source: str | Path) -> Path:
    """The folder item paths are given relative to: a manifest's folder, or the real/ fake/ folder."""
    source = Path(source)
    return source.parent if source.is_file() else source


def shown_path(path: Path, root: Path | None) -> str:
    """An item's path as metrics.json records it: relative to the data's root, so that published
    metrics name files within the data set, not on the machine that evaluated them."""
    if root is not None:
        try:
            return Path(path).relative_to(root).as_posix()
        except ValueError:
            pass
    return str(path)


def score_items(analyzer: ScoresFiles, items: list[MediaItem], log: Log = print, root: Path | None = None) -> list[dict]:
    """One row per item: its analyze report's score, per-model scores, and the largest face per frame."""
    names = list(analyzer.member_names) + ["ensemble"]
    rows = []
    for n, item in enumerate(items, 1):
        report = analyzer.analyze(item.path, region=item.region)
        row: dict = {"path": shown_path(item.path, root), "label": item.label, "group": item.group, "identity": item.identity,
                     "original": shown_path(item.original, root) if item.original else "",
                     "kind": "image" if item.kind == "image" else "video", "verdict": report.verdict,
                     "score": report.score, "errors": list(report.errors)}
        if report.score is not None:
            faces = _largest_face_per_frame(report.tracks)
            row["faces"] = [{"frame_index": f.frame_index, "score": f.score, "member_scores": f.member_scores,
                             "sharpness": f.sharpness, "face_px": _face_px(f.box)} for f in faces]
            row.update(_item_scores(report, names, analyzer.aggregate_settings))
            row.update(_item_quality(row["faces"]))
        else:
            row["faces"] = []
        rows.append(row)
        if n % 20 == 0 or n == len(items):
            log(f"scored {n}/{len(items)} items")
    return rows


def family_slices(rows: list[dict]) -> dict[str, tuple[list[dict], list[dict]]]:
    """"family (kind)" -> (that family's fakes of that kind, the real items of the same kind): videos
    are judged against real videos, photos against real photos."""
    out = {}
    for family in sorted({r["group"] for r in rows if r["label"] == 1}):
        for kind in ("video", "image"):
            fakes = [r for r in rows if r["label"] == 1 and r["group"] == family and r["kind"] == kind]
            if fakes:
                out[f"{family} ({kind})"] = (fakes, [r for r in rows if r["label"] == 0 and r["kind"] == kind])
    return out


def _family_rows(rows: list[dict], threshold: float, column: str) -> dict:
    """Each fake family against the real items of the same kind; reals get their share flagged."""
    out = {}
    for name, (fakes, reals) in family_slices([r for r in rows if column in r]).items():
        auc = auc_with_interval(fakes + reals, column)  # None without reals of that kind
        out[name] = {
            "fakes": len(fakes), "reals": len(reals), "roc_auc": auc["roc_auc"] if auc else None,
            "roc_auc_ci95": auc["roc_auc_ci95"] if auc else None,
            "mean_score": float(np.mean([r[column] for r in fakes])),
            "share_flagged_fake": float(np.mean([r[column] >= threshold for r in fakes]))}
    return out


def fake_original_pairs(rows: list[dict], column: str) -> dict:
    """Does each fake score above its own original? The original is the real item the manifest's
    `original` column names, or else (FF++ layout: a fake and its source share an identity) the real
    item of the fake's identity. A fake whose named original was not evaluated has no pair."""
    scored = [r for r in rows if column in r]
    by_identity = {r["identity"]: r for r in scored if r["label"] == 0}
    by_path = {r["path"]: r for r in scored if r["label"] == 0}
    pairs = []
    for r in scored:
        if r["label"] == 1:
            original = by_path.get(r["original"]) if r.get("original") else by_identity.get(r["identity"])
            if original is not None:
                pairs.append((r, original))
    return {"pairs": len(pairs), "fake_scores_higher": sum(f[column] > o[column] for f, o in pairs),
            "detail": [{"fake": f["path"], "original": o["path"], "fake_score": f[column], "original_score": o[column]}
                       for f, o in pairs]}


def _verdict_shares(rows: list[dict]) -> dict[str, float]:
    """Share of rows per verdict (fake, inconclusive, real, no_face, error), as `analyze` reported them."""
    counts = Counter(str(r["verdict"]) for r in rows)
    return {verdict: n / len(rows) for verdict, n in sorted(counts.items())}


def summarise(rows: list[dict], member_names: list[str], threshold: float, out_dir: Path | None = None) -> dict:
    """Metrics of scored rows (see the module docstring for the levels)."""
    names = list(member_names) + ["ensemble"]
    scored = [r for r in rows if r["score"] is not None]
    result: dict = {"threshold": threshold, "items": len(rows), "items_without_score": len(rows) - len(scored),
                    "frame": {}, "item": {}, "video": {}}
    frame_labels = np.array([r["label"] for r in scored for _ in r["faces"]])
    frame_groups = np.array([k for k, r in enumerate(scored) for _ in r["faces"]])
    for n in names:
        frame_scores = np.array([f["score"] if n == "ensemble" else f["member_scores"][n] for r in scored for f in r["faces"]])
        result["frame"][n] = _metrics(frame_labels, frame_scores, threshold, frame_groups)
        item_scores = np.array([r[f"{n}_confident"] if n != "ensemble" else r["score"] for r in scored])
        result["item"][n] = _metrics(np.array([r["label"] for r in scored]), item_scores, threshold)
        videos = [r for r in scored if r["kind"] == "video"]
        result["video"][n] = {s: _metrics(np.array([r["label"] for r in videos]), np.array([r[f"{n}_{s}"] for r in videos]),
                                          threshold) for s in TRACK_STRATEGIES} if videos else {}
    result["families"] = _family_rows(scored, threshold, "score")
    result["families_by_member"] = {n: _family_rows(scored, threshold, f"{n}_confident") for n in member_names}
    result["pairs"] = fake_original_pairs(scored, "score")
    reals = [r for r in scored if r["label"] == 0]
    result["reals_flagged_fake"] = float(np.mean([r["score"] >= threshold for r in reals])) if reals else None
    # what a user is shown: a score within `inconclusive_band` of the threshold is "inconclusive", so
    # "flagged" above (score >= threshold) counts the upper half of that band as well
    result["verdicts"] = {"real": _verdict_shares([r for r in rows if r["label"] == 0]),
                          "fake": _verdict_shares([r for r in rows if r["label"] == 1])}
    if out_dir is not None and scored:
        save_plots(np.array([r["label"] for r in scored]), np.array([r["score"] for r in scored]), threshold, out_dir,
                   "item_ensemble")
        if len(frame_labels):
            save_plots(frame_labels, np.array([f["score"] for r in scored for f in r["faces"]]), threshold, out_dir,
                       "frame_ensemble")
    result["quality_baselines"] = quality_baselines(scored, member_names)
    result["per_item"] = rows
    return result


def auc_with_interval(rows: list[dict], column: str) -> dict | None:
    """AUC of `column` as a fake score over rows, with its bootstrap interval (None without both labels)."""
    labels = np.array([r["label"] for r in rows])
    if np.unique(labels).size < 2:
        return None
    scores = np.array([r[column] for r in rows])
    return {"roc_auc": float(roc_auc_score(labels, scores)), "roc_auc_ci95": bootstrap_auc_interval(labels, scores),
            "count": len(rows), "positives": int(labels.sum())}


def _rank_correlation(rows: list[dict], column: str, measure: str) -> float | None:
    """Spearman correlation of an item score column with a quality measure (None if either is constant)."""
    scores, values = [r[column] for r in rows], [r[measure] for r in rows]
    if len(rows) < 3 or len(set(scores)) < 2 or len(set(values)) < 2:
        return None
    return float(spearmanr(scores, values).statistic)


def quality_baselines(scored: list[dict], member_names: Sequence[str] = ()) -> dict:
    """Items, videos, photos and each family: the detector's AUC beside each quality measure's on the
    same rows (only rows that carry every measure), and how the detector's score, and each member's,
    follows each measure (Spearman: negative where it calls larger, sharper faces more real)."""
    rows = [r for r in scored if all(m in r for m in QUALITY_BASELINES)]
    columns = {"ensemble": "score", **{n: f"{n}_confident" for n in member_names}}
    slices = {"items": rows, "videos": [r for r in rows if r["kind"] == "video"],
              "photos": [r for r in rows if r["kind"] == "image"],
              **{name: fakes + reals for name, (fakes, reals) in family_slices(rows).items()}}
    return {name: {"auc": {column: auc_with_interval(part, column) for column in ("score", *QUALITY_BASELINES)},
                   "score_spearman": {model: {m: _rank_correlation(part, column, m) for m in QUALITY_BASELINES}
                                      for model, column in columns.items()}}
            for name, part in slices.items() if part}


def evaluate(analyzer: ScoresFiles, items: list[MediaItem], out_dir: Path, threshold: float, log: Log = print,
             root: Path | None = None) -> dict:
    """Score every item as `analyze` does; metrics JSON (also out_dir/metrics.json, item paths relative
    to `root`) and PNG plots."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = score_items(analyzer, items, log, root)
    result = summarise(rows, list(analyzer.member_names), threshold, out_dir)
    (out_dir / "metrics.json").write_text(json.dumps(result, indent=1, default=float) + "\n")
    return result


def summary_lines(result: dict) -> list[str]:
    """A compact table for the terminal and the model card."""
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731

    def auc(m: dict) -> str:
        ci = m.get("roc_auc_ci95")
        return fmt(m["roc_auc"]) + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")

    lines = ["| level | model | AUC [95 % CI] | accuracy | precision | recall | F1 | ECE | n |",
             "|---|---|---|---|---|---|---|---|---|"]

    def row(level: str, name: str, m: dict) -> str:
        return (f"| {level} | {name} | {auc(m)} | {fmt(m['accuracy'])} | {fmt(m['precision'])} | "
                f"{fmt(m['recall'])} | {fmt(m['f1'])} | {fmt(m['ece'])} | {m['count']} |")

    for level in ("frame", "item"):
        for name, m in result[level].items():
            lines.append(row(level, name, m))
    for name, by_strategy in result["video"].items():
        for strategy, m in by_strategy.items():
            lines.append(row(f"video ({strategy})", name, m))
    lines += ["", "| family (kind) | fakes | reals | AUC [95 % CI] | mean score | flagged fake |", "|---|---|---|---|---|---|"]
    for family, m in result["families"].items():
        lines.append(f"| {family} | {m['fakes']} | {m['reals']} | {auc(m)} | {m['mean_score']:.3f} | "
                     f"{100 * m['share_flagged_fake']:.0f} % |")
    pairs = result["pairs"]
    if pairs["pairs"]:
        lines.append(f"\npairs: {pairs['fake_scores_higher']} of {pairs['pairs']} fakes score above their own original")
    if result["reals_flagged_fake"] is not None:
        lines.append(f"real items flagged fake: {100 * result['reals_flagged_fake']:.1f} %")
    for label, shares in result["verdicts"].items():
        if shares:
            lines.append(f"verdicts of {label} items: " + ", ".join(f"{v} {100 * share:.1f} %" for v, share in shares.items()))
    baselines = result.get("quality_baselines", {})
    if baselines:
        lines += ["", "quality baselines: AUC of numbers that know nothing of manipulation (higher = called more fake), "
                  "and the detector score's Spearman correlation with each",
                  "| slice | detector | " + " | ".join(QUALITY_BASELINES.values()) + " | "
                  + " | ".join(f"score ~ {m}" for m in QUALITY_BASELINES) + " |",
                  "|---|---|" + "---|" * 2 * len(QUALITY_BASELINES)]
        for name, slice_ in baselines.items():
            aucs = ["-" if slice_["auc"][c] is None else auc(slice_["auc"][c]) for c in ("score", *QUALITY_BASELINES)]
            rhos = [f"{r:+.2f}" if r is not None else "-" for r in slice_["score_spearman"]["ensemble"].values()]
            lines.append(f"| {name} | " + " | ".join(aucs + rhos) + " |")
    return lines
