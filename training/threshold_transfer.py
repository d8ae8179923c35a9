"""Does a threshold fitted on some real sources hold on others? (docs/THRESHOLD_TRANSFER.md)

Read from an existing evaluation (`evaluate`'s metrics.json) and the manifest it was run on: each real
item is judged by a threshold fitted on the real items of every other source (leave one source out),
so no item's own source chooses its threshold. Fakes play no part in any fit.

    python -m deepfake_detect.training.threshold_transfer MANIFEST.tsv METRICS.json [METRICS.json ...]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from deepfake_detect.training.data import read_manifest
from deepfake_detect.training.evaluate import data_root, shown_path
from deepfake_detect.training.false_alarm_threshold import rate_threshold

TARGET_RATE = 0.15   # issue 25's target: real items flagged fake <= 15 %


def leave_one_source_out(scores: np.ndarray, sources: list[str], rate: float = TARGET_RATE) -> dict:
    """Real items only: each source's items against the threshold fitted on every other source's."""
    scores = np.asarray(scores, dtype=float)
    by_source: dict[str, dict] = {}
    flagged = 0
    for source in sorted(set(sources)):
        inside = np.array([s == source for s in sources])
        if inside.all():
            raise ValueError("leave-one-source-out needs real items from at least two sources")
        threshold = rate_threshold(scores[~inside], rate)
        hits = int(np.sum(scores[inside] >= threshold))
        flagged += hits
        by_source[source] = {"items": int(inside.sum()), "flagged": hits, "threshold": threshold}
    return {"items": len(scores), "flagged": flagged, "rate": flagged / len(scores), "by_source": by_source}


def transfer_report(per_item: list[dict], source_of: dict[str, str], own_threshold: float,
                    kinds: tuple[str, ...] = ("video", "image")) -> dict:
    """Held-out false-alarm rate (leave one real source out) and, at the threshold fitted on all reals,
    the share of fakes flagged; the detector's own threshold's two rates beside them."""
    rows = [r for r in per_item if r.get("score") is not None and r["kind"] in kinds]
    reals = [r for r in rows if r["label"] == 0]
    fakes = np.array([r["score"] for r in rows if r["label"] == 1], dtype=float)
    real_scores = np.array([r["score"] for r in reals], dtype=float)
    held_out = leave_one_source_out(real_scores, [source_of[r["path"]] for r in reals])
    fitted = rate_threshold(real_scores, TARGET_RATE)
    return {"held_out_false_alarms": held_out, "threshold_on_all_reals": fitted,
            "fakes_flagged_at_it": float(np.mean(fakes >= fitted)) if len(fakes) else None,
            "own_threshold": own_threshold,
            "reals_flagged_at_own": float(np.mean(real_scores >= own_threshold)),
            "fakes_flagged_at_own": float(np.mean(fakes >= own_threshold)) if len(fakes) else None}


def read_sources(manifest: Path) -> dict[str, str]:
    """Each item's source, keyed by its path as `evaluate` wrote it into metrics.json."""
    return {shown_path(item.path, data_root(manifest)): item.source for item in read_manifest(manifest)}


def main(argv: list[str]) -> None:
    source_of = read_sources(Path(argv[0]))
    for path in argv[1:]:
        metrics = json.loads(Path(path).read_text())
        for label, kinds in (("items", ("video", "image")), ("videos", ("video",))):
            rep = transfer_report(metrics["per_item"], source_of, metrics["threshold"], kinds)
            held = rep["held_out_false_alarms"]
            worst = max(held["by_source"].items(), key=lambda kv: kv[1]["flagged"] / kv[1]["items"])
            print(f"{path}\t{label}\theld-out false alarms {100 * held['rate']:.1f} % ({held['flagged']} of "
                  f"{held['items']}; worst source {worst[0]} {worst[1]['flagged']} of {worst[1]['items']})\t"
                  f"at the threshold on all reals ({rep['threshold_on_all_reals']:.3f}): fakes flagged "
                  f"{100 * rep['fakes_flagged_at_it']:.1f} %\town threshold {rep['own_threshold']:.3f}: reals "
                  f"{100 * rep['reals_flagged_at_own']:.1f} %, fakes {100 * rep['fakes_flagged_at_own']:.1f} %")
            for source, row in sorted(held["by_source"].items()):
                print(f"\t{source}\t{row['flagged']} of {row['items']}\tthreshold {row['threshold']:.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])
