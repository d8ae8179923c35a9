"""`detectors combine`: one ensemble of the members of several detector folders (trained here or imported).

Each member keeps everything it was trained with: its architecture, its crop cut and normalisation
(`member_inputs`, so the pipeline cuts each input group's crops its own way) and its source detector's
calibration (`member_calibration`). The combined detector averages its members' calibrated
probabilities with threshold 0.5: its operating point is not fitted on data, and `info` says so.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from safetensors.torch import load_file

from deepfake_detect.stages.ensemble import (
    INPUT_FIELDS,
    WEIGHTS_FILE,
    DetectorConfig,
    DetectorError,
    EnsembleDetector,
    load_verified_config,
    save_detector,
)

NOT_FITTED = "operating point not fitted: the mean of its members' calibrated probabilities, threshold 0.5"


def combine_detectors(folders: list[Path], out: Path) -> Path:
    """The members of the detectors in `folders` as one detector in `out`; returns `out`."""
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
        if config.combiner != "mean":
            raise DetectorError(f"{folder}: combiner {config.combiner}: only members of a mean ensemble keep their "
                                "meaning alone")
        state = load_file(str(folder / WEIGHTS_FILE))
        for name in config.members:
            new = name if name not in architectures else f"{name}_{len(members) + 1}"
            members.append(new)
            architectures[new] = dict(config.architectures[name])
            member_input = asdict(config.member_input(name))
            inputs[new] = {key: member_input[key] for key in INPUT_FIELDS}
            own = config.member_calibration.get(name) or config.calibration
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
