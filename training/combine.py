"""`detectors combine`: one ensemble of the members of several detector folders (trained here or imported).

Each member keeps everything it was trained with: its architecture, its crop cut and normalisation
(`member_inputs`, so the pipeline cuts each input group's crops its own way) and its source detector's
calibration (`member_calibration`). Without data, the combined detector averages its members'
calibrated probabilities with threshold 0.5, and `info` says that its operating point is not fitted.
With labelled data (`detectors combine --fit`), the pipeline scores its items as `analyze` does, and
the combiner, calibration and threshold are fitted on those faces (`fit_combined`), leaving out every
item of a person that a member trained here trained on (the member's split.json).
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
from safetensors.torch import load_file
from scipy.special import logit

from deepfake_detect.stages.ensemble import (
    INPUT_FIELDS,
    WEIGHTS_FILE,
    DetectorConfig,
    DetectorError,
    EnsembleDetector,
    load_detector,
    load_verified_config,
    save_detector,
)
from deepfake_detect.training.data import SPLIT_FILE, MediaItem, load_split
from deepfake_detect.training.operating_point import fit_operating_point

NOT_FITTED = "operating point not fitted: the mean of its members' calibrated probabilities, threshold 0.5"


def combine_detectors(folders: list[Path], out: Path, will_fit: bool = False) -> Path:
    """The members of the detectors in `folders` as one detector in `out`; returns `out`. A stacking
    detector's members have no calibration of their own (its calibration is of the stacked logit), so
    they can only join an ensemble whose operating point is then fitted on data (`will_fit`)."""
    if len(folders) < 2:
        raise DetectorError("combine needs two detector folders or more")
    members: list[str] = []
    architectures: dict[str, dict] = {}
    inputs: dict[str, dict] = {}
    calibration: dict[str, dict] = {}
    tensors = {}
    sources = []
    for folder in folders:
        config = load_verified_config(folder)
        if not config.trained:
            raise DetectorError(f"{folder}: not a trained detector")
        if config.combiner != "mean" and not will_fit:
            raise DetectorError(f"{folder}: combiner {config.combiner}: only members of a mean ensemble keep their "
                                "meaning alone; fit the combined detector on data (--fit)")
        state = load_file(str(folder / WEIGHTS_FILE))
        for name in config.members:
            new = name if name not in architectures else f"{name}_{len(members) + 1}"
            members.append(new)
            architectures[new] = dict(config.architectures[name])
            member_input = asdict(config.member_input(name))
            inputs[new] = {key: member_input[key] for key in INPUT_FIELDS}
            own = config.member_calibration.get(name) or (config.calibration if config.combiner == "mean" else {})
            if own:
                calibration[new] = dict(own)
            prefix = f"members.{name}."
            tensors.update({f"members.{new}.{key[len(prefix):]}": value for key, value in state.items()
                            if key.startswith(prefix)})
        sources.append({"folder": folder.name, "name": config.name, "version": config.version, "sha256": config.sha256,
                        "provenance": config.provenance})
    first = inputs[members[0]]
    combined = DetectorConfig(members=members, architectures=architectures, combiner="mean", threshold=0.5,
                              name="combined", version="combined", trained=True, member_inputs=inputs,
                              member_calibration=calibration,
                              provenance={"combined": sources, "operating_point": NOT_FITTED},
                              **{key: first[key] for key in INPUT_FIELDS})
    model = EnsembleDetector(combined)
    tensors.update({key: value for key, value in model.state_dict().items() if key.startswith("stacker.")})
    model.load_state_dict(tensors, strict=True)
    return save_detector(model.eval(), out)


def untrained_items(items: list[MediaItem], folders: list[Path]) -> list[MediaItem]:
    """The items of people none of the detectors in `folders` trained on, by each one's split.json
    (a detector trained here keeps one; an imported one cannot say what its authors trained on)."""
    trained: set[str] = set()
    for folder in folders:
        if (folder / SPLIT_FILE).is_file():
            trained |= load_split(folder / SPLIT_FILE)[0]
    return [item for item in items if item.identity not in trained]


def face_logits(rows: list[dict], members: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(member logits (F, M), labels (F,), item index (F,)) of every scored face in `rows` (the
    rows of `training.evaluate.score_items`, whose member scores are the members' raw probabilities)."""
    logits, labels, groups = [], [], []
    for index, row in enumerate(rows):
        for face in row["faces"]:
            probs = np.array([face["member_scores"][name] for name in members], np.float64)
            logits.append(logit(np.clip(probs, 1e-7, 1 - 1e-7)))
            labels.append(row["label"])
            groups.append(index)
    return (np.array(logits, np.float32).reshape(-1, len(members)), np.array(labels, np.int64),
            np.array(groups, np.int64))


def fit_combined(folder: Path, rows: list[dict], described_as: str, seed: int = 0) -> dict:
    """Fit the operating point of the combined detector in `folder` on the faces of `rows` (scored by
    that detector, unfitted) and save it in place; returns the fit's report. `described_as` names the
    data in the detector's provenance."""
    model = load_detector(folder)
    logits, labels, groups = face_logits(rows, list(model.config.members))
    items = {int(label): len({g for g, lab in zip(groups, labels) if lab == label}) for label in (0, 1)}
    if not (items[0] and items[1]):
        raise DetectorError(f"fitting needs faces of real and of fake items; found {items[0]} real and {items[1]} fake "
                            "items with faces")
    report = fit_operating_point(model, logits, labels, seed, groups)
    report["faces"], report["real_items"], report["fake_items"] = int(len(labels)), items[0], items[1]
    model.config.provenance = {**model.config.provenance, "operating_point": (
        f"fitted on {len(labels)} faces of {items[0]} real and {items[1]} fake items ({described_as}): combiner "
        f"{model.config.combiner}, threshold {model.config.threshold}")}
    model.config.training = {**model.config.training, "combiner": report}
    save_detector(model, folder)
    return report
