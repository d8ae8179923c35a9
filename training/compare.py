"""Compare two evaluations of the same items: does detector B beat detector A beyond the noise?

Both inputs are `metrics.json` files written by `deepfake-detect evaluate` over the same data (for
example the shipped detector and a new recipe, both on `--split dev`). Items are matched by path.
On a small dev set each detector's own AUC interval is wide (0.2 either side with 7 real videos),
yet two detectors scored on the same items share most of that noise: which items happen to be hard.
A paired bootstrap (the same resampled items for both) measures the difference itself, so
"B is better" is claimed only when the difference's interval excludes zero.

Slices: all items, videos, photos, and each fake family against the real items of the same kind
(as `evaluate` defines its family rows); also the fake/original pairs and the real items flagged
fake at each detector's own threshold. `column_a` / `column_b` choose the score compared: "score"
(what `analyze` reports) or a member's, e.g. "mobilenetv2_100_confident", to set a one-member
run against the same member inside a shipped ensemble.

`resample="sources"` draws whole sources instead of items: a fake family (its clips share one
generator) or a real identity (its clips share one person). Where a slice has a few families with
several clips each (the never-trained set: 8 fake videos from 5 families), items are not independent
and the item bootstrap gives too narrow an interval; the sources bootstrap is the honest one there.
"""
from __future__ import annotations

from typing import Literal

import numpy as np

from deepfake_detect.training.evaluate import fake_original_pairs, family_slices
from deepfake_detect.training.metrics import paired_auc_difference


def _slices(rows: list[dict]) -> dict[str, list[dict]]:
    """The rows of each slice that has fakes and reals: all, videos, photos, then each family."""
    slices = {"all items": rows, "videos": [r for r in rows if r["kind"] == "video"],
              "photos": [r for r in rows if r["kind"] == "image"]}
    slices.update({name: fakes + reals for name, (fakes, reals) in family_slices(rows).items()})
    return {name: rows_in for name, rows_in in slices.items() if len({r["label"] for r in rows_in}) == 2}


def _same_file(path: str, rows: dict[str, dict]) -> dict | None:
    """The one row whose path names the same file seen from another folder: older evaluations
    recorded paths as given on the command line ("../data/dev/x.mp4"), newer ones relative to the
    data's root ("dev/x.mp4"). None when no path, or more than one, matches."""
    found = [row for other, row in rows.items() if other.endswith("/" + path) or path.endswith("/" + other)]
    return found[0] if len(found) == 1 else None


Resample = Literal["items", "sources"]


def _source(row: dict) -> str:
    """What a row shares with others of its kind: its generator family (fakes) or its person (reals)."""
    return f"fake:{row.get('group')}" if row["label"] == 1 else f"real:{row.get('identity')}"


def compare_evaluations(a: dict, b: dict, column_a: str = "score", column_b: str = "score",
                        resamples: int = 2000, seed: int = 0, resample: Resample = "items") -> dict:
    """Paired comparison of evaluation `b` against evaluation `a` (both `evaluate` results)."""
    b_rows = {r["path"]: r for r in b["per_item"]}
    rows: list[dict] = []   # a's rows that both scored, with the two scores under "a" and "b"
    for row in a["per_item"]:
        other = b_rows.get(row["path"]) or _same_file(row["path"], b_rows)
        if other is None or row.get(column_a) is None or other.get(column_b) is None:
            continue
        if other["label"] != row["label"]:
            raise ValueError(f"{row['path']}: labelled {row['label']} in one evaluation and {other['label']} in the other")
        rows.append({**row, "a": float(row[column_a]), "b": float(other[column_b])})
    if not rows:
        raise ValueError("the two evaluations have no scored item in common")
    slices = {}
    for name, rows_in in _slices(rows).items():
        y = np.array([r["label"] for r in rows_in])
        groups = np.array([_source(r) for r in rows_in]) if resample == "sources" else None
        paired = paired_auc_difference(y, np.array([r["a"] for r in rows_in]), np.array([r["b"] for r in rows_in]),
                                       resamples=resamples, seed=seed, groups=groups)
        assert paired is not None  # _slices keeps only slices with both classes
        slices[name] = {"fakes": int(y.sum()), "reals": int(len(y) - y.sum()), **paired}
    reals = [r for r in rows if r["label"] == 0]
    flagged = {side: float(np.mean([r[side] >= threshold for r in reals])) if reals else None
               for side, threshold in (("a", a["threshold"]), ("b", b["threshold"]))}
    pairs = {side: fake_original_pairs(rows, side) for side in ("a", "b")}
    return {"columns": {"a": column_a, "b": column_b}, "resample": resample, "matched_items": len(rows),
            "only_in_a": len(a["per_item"]) - len(rows), "only_in_b": len(b["per_item"]) - len(rows),
            "slices": slices, "reals_flagged_fake": flagged,
            "pairs": {"pairs": pairs["a"]["pairs"], "a": pairs["a"]["fake_scores_higher"], "b": pairs["b"]["fake_scores_higher"]}}


def comparison_lines(result: dict) -> list[str]:
    """The comparison as a Markdown table for the terminal and the model card."""
    lines = [f"{result['matched_items']} items scored by both (A: {result['columns']['a']}, B: {result['columns']['b']}; "
             f"resampling {result.get('resample', 'items')})",
             "", "| slice | fakes / reals | AUC B - A [95 % CI] | B better in |", "|---|---|---|---|"]
    for name, s in result["slices"].items():
        low, high = s["ci95"]
        verdict = " (B better)" if low > 0 else " (A better)" if high < 0 else ""
        lines.append(f"| {name} | {s['fakes']} / {s['reals']} | {s['difference']:+.3f} [{low:+.2f}, {high:+.2f}]{verdict} | "
                     f"{100 * s['b_better']:.0f} % of resamples |")
    pairs = result["pairs"]
    if pairs["pairs"]:
        n = pairs["pairs"]
        lines.append(f"\npairs (fake above its own original): A {pairs['a']} of {n}, B {pairs['b']} of {n}")
    flagged = result["reals_flagged_fake"]
    if flagged["a"] is not None:
        lines.append(f"real items flagged fake at each one's threshold: "
                     f"A {100 * flagged['a']:.1f} %, B {100 * flagged['b']:.1f} %")
    return lines
