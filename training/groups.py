"""Issue 25's family groups never in train, scored from an evaluation's metrics.json.

The groups were fixed before any 0.4 candidate was evaluated (docs/SHIP_RULE_0.4.md, rule 5). Each is
scored on videos: its fake videos against every real video of the evaluation, with a bootstrap
interval. StyleTalk and Wav2Lip are in train, so the lip-sync group leaves them out.

    python -m deepfake_detect.training.groups runs/eval/dev/metrics.json [more metrics.json ...]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from deepfake_detect.training.evaluate import auc_with_interval

GROUPS: dict[str, tuple[str, ...]] = {
    # one photo (or a driving video) animated into a talking face
    "talking heads": ("VASA-1", "talking-head synthesis (VASA-1 demo clip)", "EMO", "talking-head synthesis (EMO demo clip)",
                      "talking-head synthesis (DreamTalk)", "portrait animation (AniPortrait)", "Loopy", "FLOAT",
                      "Playmate", "face-vid2vid", "multi (EchoMimic|Hallo|V-Express|Loopy)"),
    # video-diffusion avatars and dubbing: head and body painted by a video generator
    "avatar generators": ("LongCat-Video-Avatar", "InfiniteTalk", "FantasyTalking"),
    # a real speaker's mouth re-synthesised (those never in train)
    "lip-sync methods": ("DFRF", "DINet", "AD-NeRF", "TalkLip", "LatentSync"),
}


def group_aucs(per_item: list[dict], column: str = "score") -> dict[str, dict]:
    """Each group's video AUC (fakes of the group vs all real videos) with its 95 % interval."""
    videos = [r for r in per_item if r["kind"] == "video" and r.get(column) is not None]
    reals = [r for r in videos if r["label"] == 0]
    out = {}
    for name, families in GROUPS.items():
        fakes = [r for r in videos if r["label"] == 1 and r["group"] in families]
        auc = auc_with_interval(fakes + reals, column)  # the one AUC-with-interval of evaluate's family rows
        out[name] = {"fakes": len(fakes), "reals": len(reals), "roc_auc": auc["roc_auc"] if auc else None,
                     "roc_auc_ci95": auc["roc_auc_ci95"] if auc else None}
    return out


def main(paths: list[str]) -> None:
    for path in paths:
        per_item = json.loads(Path(path).read_text())["per_item"]
        for name, row in group_aucs(per_item).items():
            low, high = row["roc_auc_ci95"] or (float("nan"), float("nan"))
            print(f"{path}\t{name}\t{row['fakes']} fake vs {row['reals']} real videos\t"
                  f"AUC {row['roc_auc']:.3f} [{low:.2f}, {high:.2f}]")


if __name__ == "__main__":
    main(sys.argv[1:])
