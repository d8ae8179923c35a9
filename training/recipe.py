"""The training recipe: what configs/train.yaml may say, checked when it is read."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from annotated_types import Ge, Gt, Interval

from deepfake_detect.training.augment import DEFAULT_ZOOM_MIN_AREA
from deepfake_detect.training.cached import RealBalance, RealMatch, Schedule

Log = Callable[[str], None]


@dataclass
class PhaseConfig:
    lr: Annotated[float, Gt(0)]
    steps: Annotated[int, Ge(0)] = 0     # mode "full": optimiser steps on fresh batches
    epochs: Annotated[int, Ge(0)] = 0    # mode "cached": passes over the fixed training set
    schedule: Schedule = "cosine"  # step: x0.1 at 1/2 and 3/4 of the run (training.cached.schedule_factor)


@dataclass
class MemberRecipe:
    init: str | list[str] = "scratch"  # ImageNet safetensors path, "scratch", "distill", or a list to compare
    frozen_blocks: Annotated[int, Ge(0)] = 3  # mode "cached": blocks[:k] stay frozen and are computed once
    head: PhaseConfig = field(default_factory=lambda: PhaseConfig(1e-3, steps=100, epochs=3))
    finetune: PhaseConfig = field(default_factory=lambda: PhaseConfig(3e-4, steps=400, epochs=8))
    teacher: str = ""            # mode "cached": a member trained earlier in this run whose probabilities
    kd_weight: Annotated[float, Interval(ge=0, le=1)] = 0.5  # are mixed into this one's targets (distillation)


@dataclass
class TrainConfig:
    data: str                                   # manifest TSV or folder with real/ fake/
    out: str = "runs/latest"
    mode: Literal["cached", "full"] = "cached"  # cached: CPU recipe (training/cached.py) | full: whole network
    train_pairs: Annotated[int, Ge(1)] = 1500   # mode "cached": real crops, each with its self-blended fake
    sbi_sets: Annotated[int, Ge(1)] = 1         # mode "cached": training sets, each with fresh draws and fresh
                                                # pseudo-fakes; epoch e trains on set e mod sbi_sets
    ae_pairs: Annotated[int, Ge(0)] = 0          # mode "cached": per training set, real crops each beside its
                                                # reconstruction by an upsampling autoencoder trained on real
                                                # faces (training/autoencoder.py: a whole-face generator's traces)
    ae_steps: Annotated[int, Ge(1)] = 1500      # that autoencoder's training steps (batches of 16 real crops)
    sbi_landmarks: Literal[5, 68] = 5           # the self-blend masks: from MTCNN's 5 points, or from dlib's 68
                                                # (training/landmarks68.py, as SBI does; the `train` extras)
    real_fakes: Annotated[int, Ge(0)] = 0       # mode "cached": crops of real fakes (family-balanced), each
                                                # matched by one more real crop
    real_balance: RealBalance = "identity"      # real draws: each identity alike, or each source (the
                                                # manifest's source_repo) alike and each identity within it
    real_match: RealMatch = "random"            # that real crop: any (identity-balanced), or the one
                                                # of QUALITY_CANDIDATES draws closest in sharpness (the classes
                                                # then share one quality distribution: training/cached.py)
    val_fakes: Annotated[int, Ge(0)] = 100      # held-out real-fake crops (and as many reals) in validation
    members: dict[str, MemberRecipe] = field(default_factory=dict)
    distill_teacher: str = ""                   # the teacher's ImageNet weights (safetensors, timm names)
    distill_teacher_arch: str = "tf_efficientnet_lite0"   # its timm architecture (training/teachers.py converts Lite1/Lite2)
    distill_steps: Annotated[int, Ge(0)] = 300
    distill_target: Literal["logits", "features"] = "logits"  # features: also match every stage's feature
                                                # maps, on real and fake faces
    frames_per_video: Annotated[int, Ge(1)] = 16
    holdout_share: Annotated[float, Interval(gt=0, lt=1)] = 0.2
    val_pairs: Annotated[int, Ge(1)] = 200
    batch_pairs: Annotated[int, Ge(1)] = 8      # a batch is 2x this: each real beside its fake
    eval_every: Annotated[int, Ge(1)] = 100
    patience: Annotated[int, Ge(1)] = 3         # evaluations without improvement before stopping
    input_size: Annotated[int, Ge(32)] = 224
    crop_margin: Annotated[float, Ge(0)] = 0.3
    detail_size: Annotated[int, Ge(8)] | None = None  # the detector's detail ceiling (DetectorConfig.detail_size):
                                                # applied where the combiner, calibration and threshold are
                                                # fitted on the holdout and at analysis; members learn from
                                                # full-detail crops, so their checkpoints do not depend on it,
    train_detail: bool = False                  # unless this is set: then the members learn under the ceiling
                                                # too (mode "cached"; EffV2's distilled start stays full-detail)
    zoom_min_area: Annotated[float, Interval(gt=0, le=1)] = DEFAULT_ZOOM_MIN_AREA  # random zoom keeps >= this share
    drop_rate: Annotated[float, Interval(ge=0, lt=1)] = 0.2
    seed: int = 0
    split_seed: int | None = None               # the identity split's seed (None: `seed`); set it to retrain
                                                # with other draws on the same split (run-to-run spread)
    replicas: Annotated[int, Ge(1)] = 1         # a seed ensemble: every member trained this many times, with
                                                # seeds seed, seed+1, ... on one identity split, all kept
    threads: Annotated[int, Ge(0)] = 0          # 0: torch's default
    version: str = "0.1.0"
    splits: list[str] = field(default_factory=lambda: ["train"])  # manifest splits to train on

    def __post_init__(self) -> None:
        if self.detail_size is not None and self.detail_size >= self.input_size:
            raise ValueError(f"detail_size ({self.detail_size}) must be below input_size ({self.input_size})")
        if self.train_detail and (self.detail_size is None or self.mode != "cached"):
            raise ValueError("train_detail needs a detail_size and mode: cached")
        if self.ae_pairs and self.mode != "cached":
            raise ValueError("ae_pairs needs mode: cached")
        if self.sbi_sets > 1 and self.mode != "cached":
            raise ValueError("sbi_sets needs mode: cached (mode full draws fresh batches anyway)")


MEAN = STD = (0.5, 0.5, 0.5)  # the normalisation of the ImageNet initialisations we have


def split_seed(cfg: TrainConfig) -> int:
    """The identity split's seed: `split_seed` where set, else `seed`."""
    return cfg.seed if cfg.split_seed is None else cfg.split_seed


def member_detail(cfg: TrainConfig) -> int | None:
    """The detail ceiling the members learn under: the detector's with `train_detail`, else none."""
    return cfg.detail_size if cfg.train_detail else None


def replica_configs(cfg: TrainConfig) -> list[TrainConfig]:
    """The one-seed runs a seed ensemble is made of: seeds seed, seed+1, ..., one identity split.
    Each equals `train` with that seed and `split_seed` (and shares its cached members)."""
    return [dataclasses.replace(cfg, seed=cfg.seed + r, split_seed=split_seed(cfg), replicas=1)
            for r in range(cfg.replicas)]


def ensemble_member_name(name: str, replica: TrainConfig, replicas: int) -> str:
    """A member's name in the detector: the architecture alone, or with its seed in a seed ensemble."""
    return name if replicas == 1 else f"{name}-seed{replica.seed}"


def load_train_config(path: str | Path, overrides: dict | None = None) -> TrainConfig:
    """configs/train.yaml -> TrainConfig, every value checked (type, range, choices) by the same
    loader as the analysis settings; `overrides` are top-level keys (e.g. out, data)."""
    from deepfake_detect.stages.settings import load_settings

    data = read_recipe(Path(path))
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return load_settings(TrainConfig, data, "training setting")


def read_recipe(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """A recipe file's settings. `base: OTHER.yaml` (relative to this file) starts from another recipe,
    so a variant says only what it changes instead of being a near-copy that drifts: top-level keys
    replace the base's, and `members` entries replace, add or (set to null) leave out members by name."""
    from deepfake_detect.stages.settings import ConfigError, read_yaml

    path = path.resolve()
    if path in seen:
        raise ConfigError(f"recipe {path} is its own base")
    data = read_yaml(path)
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"recipe {path}: base must be a file name, got {base!r}")
    merged = read_recipe(path.parent / base, (*seen, path))
    own, inherited = data.pop("members", None) or {}, merged.get("members") or {}
    if not isinstance(own, dict) or not isinstance(inherited, dict):
        raise ConfigError(f"recipe {path}: members must be a mapping of member name to its recipe, in it and its base")
    # a member set to null is left out: a measurement of one member trains only that one
    members = {name: recipe for name, recipe in {**inherited, **own}.items() if recipe is not None}
    merged.update(data)
    if members:
        merged["members"] = members
    return merged
