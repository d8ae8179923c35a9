"""Train the ensemble on self-blended pseudo-fakes and save it as a detector.

Recipe (configs/train.yaml): faces of real media are split by identity; each member trains on
batches of real faces and their self-blended fakes, first the head alone on a frozen backbone,
then the whole network with a cosine (or step) schedule, keeping the checkpoint with the best
AUC on held-out identities and stopping when it stops improving. The combiner (mean or a stacking
layer) is then chosen on the held-out identities, which no member trained on.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import timm
import torch
from annotated_types import Ge, Gt, Interval
from safetensors.torch import load_file
from scipy.special import expit
from timm.models.efficientnet import EfficientNet
from torch import nn

from stages.classify import to_model_input
from stages.detect import DetectSettings, FaceDetector
from stages.ensemble import DetectorConfig, EnsembleDetector, create_member, save_detector
from training.augment import DEFAULT_ZOOM_MIN_AREA, build_train_transform
from training.cached import LateBlocks, Schedule, build_sbi_set, early_features, lr_schedule, train_late_blocks
from training.calibrate import apply_calibration, fit_calibration
from training.data import FaceSet, MediaItem, extract_all, read_dataset, save_split, split_by_identity
from training.metrics import best_threshold, binary_metrics
from training.sbi_batches import FacePool, fixed_face_set, fixed_sbi_set, normalise, sbi_batch

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
    real_fakes: Annotated[int, Ge(0)] = 0       # mode "cached": crops of real fakes (family-balanced), each
                                                # matched by one more real crop
    val_fakes: Annotated[int, Ge(0)] = 100      # held-out real-fake crops (and as many reals) in validation
    members: dict[str, MemberRecipe] = field(default_factory=dict)
    distill_teacher: str = ""                   # tf_efficientnet_lite0 ImageNet safetensors
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
    zoom_min_area: Annotated[float, Interval(gt=0, le=1)] = DEFAULT_ZOOM_MIN_AREA  # random zoom keeps >= this share
    drop_rate: Annotated[float, Interval(ge=0, lt=1)] = 0.2
    seed: int = 0
    split_seed: int | None = None               # the identity split's seed (None: `seed`); set it to retrain
                                                # with other draws on the same split (run-to-run spread)
    threads: Annotated[int, Ge(0)] = 0          # 0: torch's default
    version: str = "0.1.0"
    splits: list[str] = field(default_factory=lambda: ["train"])  # manifest splits to train on


MEAN = STD = (0.5, 0.5, 0.5)  # the normalisation of the ImageNet initialisations we have


def load_backbone(model: nn.Module, path: str | Path) -> list[str]:
    """Load ImageNet weights into a one-logit member, dropping the 1000-class classifier."""
    state = {k: v for k, v in load_file(str(path)).items() if not k.startswith("classifier.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith("classifier.") for k in missing):
        raise ValueError(f"{path} does not fit {type(model).__name__}: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return missing


@torch.no_grad()
def member_logits(model: nn.Module, crops: np.ndarray, batch: int = 64) -> np.ndarray:
    model.eval()
    out = [model(to_model_input(crops[i:i + batch], MEAN, STD, crops.shape[1], torch.device("cpu"))).float().squeeze(1)
           for i in range(0, len(crops), batch)]
    return torch.cat(out).numpy() if out else np.zeros(0, np.float32)


def _auc(model: nn.Module, val: tuple[np.ndarray, np.ndarray]) -> float:
    return binary_metrics(val[1], expit(member_logits(model, val[0])), 0.5)["roc_auc"]


def _freeze_backbone(model: EfficientNet, frozen: bool) -> list[nn.Parameter]:
    head = model.get_classifier()
    for p in model.parameters():
        p.requires_grad = not frozen
    for p in head.parameters():
        p.requires_grad = True
    return [p for p in model.parameters() if p.requires_grad]


def run_phase(model: EfficientNet, phase: PhaseConfig, pool: FacePool, val, cfg: TrainConfig, rng: np.random.Generator,
              frozen: bool, log: Log, name: str) -> dict:
    """One training phase with early stopping on validation AUC; the best weights are restored."""
    params = _freeze_backbone(model, frozen)
    opt = torch.optim.AdamW(params, lr=phase.lr, weight_decay=1e-4 if frozen else 1e-2)
    scheduler = lr_schedule(opt, phase.schedule, phase.steps)
    loss_fn = nn.BCEWithLogitsLoss()
    transform = build_train_transform(cfg.input_size, cfg.zoom_min_area)
    best: dict[str, Any] = {"auc": _auc(model, val), "step": 0, "state": copy.deepcopy(model.state_dict())}
    history = [{"step": 0, "val_auc": best["auc"]}]
    log(f"{name}: start val AUC {best['auc']:.3f}")
    stale, losses, t0 = 0, [], time.time()
    for step in range(1, phase.steps + 1):
        model.train()
        if frozen:  # frozen BN statistics: the ImageNet ones are better than a 16-image batch's
            for m in model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        x, y = sbi_batch(pool, cfg.batch_pairs, rng, transform, cfg.crop_margin, cfg.input_size, MEAN, STD)
        loss = loss_fn(model(x).squeeze(1), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        scheduler.step()
        losses.append(loss.item())
        if step % cfg.eval_every == 0 or step == phase.steps:
            auc = _auc(model, val)
            rate = step * 2 * cfg.batch_pairs / (time.time() - t0)
            history.append({"step": step, "loss": float(np.mean(losses[-cfg.eval_every:])), "val_auc": auc})
            log(f"{name}: step {step}/{phase.steps} loss {history[-1]['loss']:.4f} val AUC {auc:.3f} ({rate:.1f} img/s)")
            if auc > best["auc"]:
                best, stale = {"auc": auc, "step": step, "state": copy.deepcopy(model.state_dict())}, 0
            else:
                stale += 1
                if stale >= cfg.patience:
                    log(f"{name}: early stop at step {step} (best AUC {best['auc']:.3f} at step {best['step']})")
                    break
    model.load_state_dict(best["state"])
    return {"history": history, "best_auc": best["auc"], "best_step": best["step"], "seconds": time.time() - t0,
            "images": step * 2 * cfg.batch_pairs}


class FeatureMatch(nn.Module):
    """FitNets-style hints: 1x1 convolutions that map each student stage (and its final feature map)
    onto the teacher's channels, so the student's early blocks, which stay frozen later, learn the
    teacher's features directly rather than only through its 1000 logits. Discarded after distillation."""

    def __init__(self, student: EfficientNet, teacher: EfficientNet):
        super().__init__()
        pairs = [*zip(_stage_channels(student), _stage_channels(teacher)), (student.num_features, teacher.num_features)]
        self.adapters = nn.ModuleList(nn.Conv2d(s, t, 1, bias=False) for s, t in pairs)

    def forward(self, student_maps: list[torch.Tensor], teacher_maps: list[torch.Tensor]) -> torch.Tensor:
        loss = student_maps[0].new_zeros(())
        for adapter, s, t in zip(self.adapters, student_maps, teacher_maps, strict=True):
            # each teacher channel standardised over the batch: every stage weighs alike whatever its scale
            t = (t - t.mean(dim=(0, 2, 3), keepdim=True)) / (t.std(dim=(0, 2, 3), keepdim=True) + 1e-4)
            loss = loss + nn.functional.mse_loss(adapter(s), t)
        return loss / len(self.adapters)


def _stage_channels(model: EfficientNet) -> list[int]:
    return [int(info["num_chs"]) for info in model.feature_info]


def _maps_and_logits(model: EfficientNet, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    final, stages = model.forward_intermediates(x)
    return [*stages, final], model.forward_head(final)


def distill_backbone(student_arch: str, teacher_path: str, pools: list[FacePool], steps: int, cfg: TrainConfig,
                     rng: np.random.Generator, log: Log) -> dict[str, torch.Tensor]:
    """Teach `student_arch` to reproduce EfficientNet-Lite0's ImageNet logits (and, with
    `distill_target: features`, its feature maps at every stage) on face frames of every
    training item, real or fake (no labels needed): ImageNet-like features where no ImageNet
    weights exist."""
    teacher = timm.create_model("tf_efficientnet_lite0", num_classes=1000)
    teacher.load_state_dict(load_file(teacher_path))
    teacher.eval()
    student = timm.create_model(student_arch, num_classes=1000, drop_rate=cfg.drop_rate)
    assert isinstance(teacher, EfficientNet) and isinstance(student, EfficientNet)
    hints = FeatureMatch(student, teacher) if cfg.distill_target == "features" else None
    params = [*student.parameters(), *(hints.parameters() if hints else [])]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-2)
    scheduler = lr_schedule(opt, "cosine", steps)
    transform = build_train_transform(cfg.input_size, cfg.zoom_min_area)
    temperature, t0 = 2.0, time.time()
    for step in range(1, steps + 1):
        crops = []
        for _ in range(2 * cfg.batch_pairs):
            ctx, box, _ = pools[rng.integers(len(pools))].draw(rng)
            crops.append(transform(ctx))  # the whole context crop: faces and what surrounds them
        x = normalise(torch.stack(crops), MEAN, STD)
        with torch.no_grad():
            teacher_maps, teacher_logits = _maps_and_logits(teacher, x)
            target = torch.log_softmax(teacher_logits / temperature, dim=1)
        student.train()
        student_maps, student_logits = _maps_and_logits(student, x)
        pred = torch.log_softmax(student_logits / temperature, dim=1)
        kl = nn.functional.kl_div(pred, target, log_target=True, reduction="batchmean") * temperature ** 2
        hint = hints(student_maps, teacher_maps) if hints else kl.new_zeros(())
        loss = kl + hint
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        scheduler.step()
        if step % 50 == 0 or step == steps:
            rate = step * len(crops) / (time.time() - t0)
            log(f"distill {student_arch}: step {step}/{steps} KL {kl.item():.3f} features {hint.item():.3f} ({rate:.1f} img/s)")
    return {k: v for k, v in student.state_dict().items() if not k.startswith("classifier.")}


def _pool_digest(pool: FacePool | None) -> str:
    return pool.digest if pool else hashlib.sha1().hexdigest()  # None: the digest of nothing


def cached_sbi_set(pool: FacePool, cfg: TrainConfig, cache_dir: Path,
                   fake_pool: FacePool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed, augmented training set (real / self-blended / real-fake crops), stored as
    safetensors so that a re-run or a resumed run with the same data and recipe skips building it."""
    from safetensors.torch import save_file

    n_fakes = cfg.real_fakes if fake_pool is not None else 0
    key = hashlib.sha1(json.dumps([_pool_digest(pool), _pool_digest(fake_pool), cfg.train_pairs, n_fakes, cfg.seed,
                                   cfg.input_size, cfg.crop_margin, cfg.zoom_min_area, 3]).encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"sbi-{key}.safetensors"
    if path.is_file():
        try:
            data = load_file(str(path))
            return data["images"], data["labels"]
        except Exception:  # a damaged entry (interrupted write) is rebuilt
            path.unlink(missing_ok=True)
    rng = np.random.default_rng(cfg.seed + 2)
    with torch.random.fork_rng():  # the set depends only on its key; the global RNG is left as it was
        torch.manual_seed(cfg.seed + 2)
        images, labels = build_sbi_set(pool, cfg.train_pairs, rng, cfg.crop_margin, cfg.input_size, augment=True,
                                       fake_pool=fake_pool, n_fakes=n_fakes, zoom_min_area=cfg.zoom_min_area)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    save_file({"images": images.contiguous(), "labels": labels}, str(partial))
    partial.replace(path)
    return images, labels


def _train_cached(member: EfficientNet, recipe: MemberRecipe, train_set, val, cfg: TrainConfig, log: Log, name: str,
                  soft_targets: torch.Tensor | None = None) -> dict:
    """Head, then late blocks, on features of the frozen early blocks computed once."""
    t0 = time.time()
    k = recipe.frozen_blocks
    feats = early_features(member, train_set[0], k, MEAN, STD)
    val_feats = early_features(member, torch.from_numpy(val[0]).permute(0, 3, 1, 2).contiguous(), k, MEAN, STD)
    log(f"{name}: cached blocks[:{k}] features {tuple(feats.shape[1:])} for {len(feats)} crops in {time.time() - t0:.0f} s")
    late = LateBlocks(member, k)
    result: dict[str, Any] = {"frozen_blocks": k, "feature_seconds": time.time() - t0}
    train, valid = (feats, train_set[1]), (val_feats, val[1])
    soft_weight = recipe.kd_weight if soft_targets is not None else 0.0
    if recipe.init != "scratch" and recipe.head.epochs:
        result["head"] = train_late_blocks(late, train, valid, recipe.head.epochs, recipe.head.lr, recipe.head.schedule,
                                           True, cfg.seed, log, f"{name} head", patience=cfg.patience,
                                           soft_targets=soft_targets, soft_weight=soft_weight)
    result["finetune"] = train_late_blocks(late, train, valid, recipe.finetune.epochs, recipe.finetune.lr,
                                           recipe.finetune.schedule, False, cfg.seed, log, f"{name} finetune",
                                           patience=cfg.patience, freeze_bn=recipe.init != "scratch",
                                           soft_targets=soft_targets, soft_weight=soft_weight)
    return result


def _stacking_cv(logits: np.ndarray, labels: np.ndarray, seed: int, folds: int = 5) -> tuple[float, float]:
    """Out-of-fold AUC of the stacking layer vs the plain mean, on held-out identities."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    oof = np.zeros(len(labels))
    for train_idx, test_idx in StratifiedKFold(folds, shuffle=True, random_state=seed).split(logits, labels):
        oof[test_idx] = LogisticRegression().fit(logits[train_idx], labels[train_idx]).predict_proba(logits[test_idx])[:, 1]
    mean_prob = expit(logits).mean(axis=1)
    return binary_metrics(labels, oof, 0.5)["roc_auc"], binary_metrics(labels, mean_prob, 0.5)["roc_auc"]


def prepare_faces(cfg: TrainConfig, cache_dir: Path, log: Log) -> tuple[list[MediaItem], dict[Path, FaceSet]]:
    """Faces of every item of the training splits: real ones, and real fakes where cfg.real_fakes asks."""
    items = [i for i in read_dataset(cfg.data) if (i.label == 0 or cfg.real_fakes) and (not i.split or i.split in cfg.splits)]
    log(f"{sum(i.label == 0 for i in items)} real and {sum(i.label == 1 for i in items)} fake training items; "
        f"extracting faces (cached in {cache_dir})")
    detector = FaceDetector(DetectSettings(min_confidence=0.9))
    faces = extract_all(items, detector, cache_dir, cfg.frames_per_video)
    return items, faces


def _pools(items: list[MediaItem], faces: dict[Path, FaceSet], identities: set[str]) -> tuple[FacePool, FacePool | None]:
    """Real faces keyed by identity; real fakes keyed by (family, identity) so each family counts alike."""
    real = [(i.identity, faces[i.path]) for i in items if i.label == 0 and i.path in faces and i.identity in identities]
    fake = [((i.group, i.identity), faces[i.path]) for i in items
            if i.label == 1 and i.path in faces and i.identity in identities and len(faces[i.path])]
    return FacePool(real), (FacePool(fake) if fake else None)


def _validation_set(held_real: FacePool, held_fake: FacePool | None, cfg: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """Held-out identities: each real crop beside its self-blended fake, plus real fakes and as many reals."""
    crops, labels = fixed_sbi_set(held_real, cfg.val_pairs, cfg.seed + 1, cfg.crop_margin, cfg.input_size)
    if held_fake is not None and cfg.val_fakes:
        fakes = fixed_face_set(held_fake, cfg.val_fakes, cfg.seed + 3, 1, cfg.crop_margin, cfg.input_size)
        reals = fixed_face_set(held_real, cfg.val_fakes, cfg.seed + 4, 0, cfg.crop_margin, cfg.input_size)
        crops = np.concatenate([crops, fakes[0], reals[0]])
        labels = np.concatenate([labels, fakes[1], reals[1]])
    return crops, labels


def _images_logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Logits of a whole member for uint8 (N, 3, S, S) images (a teacher's view of the training set)."""
    return torch.from_numpy(member_logits(model, images.permute(0, 2, 3, 1).numpy()))


class Checkpoints:
    """Finished members, saved as they finish, so an interrupted run resumes after the last one.

    A member's entry is keyed by everything that determines it: the run-wide recipe, its own recipe
    and those of the members trained before it (a teacher), and the faces. A changed recipe retrains
    instead of reusing a stale member, while a run that changes only a later member reuses the
    earlier ones (entries live in the cache folder, shared by runs).
    """

    def __init__(self, folder: Path, cfg: TrainConfig, data_digest: str):
        self.folder = folder
        self.cfg, self.data_digest = cfg, data_digest

    def _paths(self, name: str) -> tuple[Path, Path]:
        stem = self.stem(name)
        return self.folder / f"{stem}.safetensors", self.folder / f"{stem}.json"

    def stem(self, name: str) -> str:
        # distillation settings belong to the members that distil, not to the whole run: a run that
        # only lengthens EfficientNetV2's distillation reuses the finished MobileNetV2
        distill = ("distill_steps", "distill_teacher", "distill_target")
        run_wide = {k: v for k, v in asdict(self.cfg).items() if k not in ("out", "version", "threads", "members", *distill)}
        names = list(self.cfg.members)
        earlier = {}
        for n in names[:names.index(name) + 1]:
            recipe = self.cfg.members[n]
            inits = recipe.init if isinstance(recipe.init, list) else [recipe.init]
            earlier[n] = {**asdict(recipe), **({k: getattr(self.cfg, k) for k in distill} if "distill" in inits else {})}
        key = hashlib.sha1(json.dumps([run_wide, earlier, self.data_digest], sort_keys=True, default=str).encode())
        return f"{name}-{key.hexdigest()[:16]}"

    def load(self, name: str, model: nn.Module) -> dict | None:
        weights, meta = self._paths(name)
        if not (weights.is_file() and meta.is_file()):
            return None
        try:
            model.load_state_dict(load_file(str(weights)))
            return json.loads(meta.read_text())
        except Exception:  # damaged by an interruption: train again
            return None

    def save(self, name: str, model: nn.Module, result: dict) -> None:
        from safetensors.torch import save_file

        weights, meta = self._paths(name)
        self.folder.mkdir(parents=True, exist_ok=True)
        partial = Path(str(weights) + ".partial")
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(partial))
        partial.replace(weights)
        meta.write_text(json.dumps(result, default=float))  # written last: its presence marks the entry whole


def _train_member(name: str, recipe: MemberRecipe, cfg: TrainConfig, pools: tuple[FacePool, FacePool | None],
                  train_set, val, teachers: dict[str, nn.Module], rng: np.random.Generator, log: Log) -> tuple[nn.Module, dict]:
    """Train every start listed in `recipe.init` and keep the one with the best held-out AUC."""
    inits = recipe.init if isinstance(recipe.init, list) else [recipe.init]
    candidates = {}
    for init in inits:
        member = create_member(name, cfg.drop_rate)
        assert isinstance(member, EfficientNet)  # every MEMBER_REGISTRY entry is a timm EfficientNet-family model
        if init == "distill":
            log(f"{name}: distilling from EfficientNet-Lite0 ({cfg.distill_steps} steps, {cfg.distill_target})")
            # feature distillation (the "over all frames of all videos") draws real and fake faces
            # alike, as the teacher needs no labels; logits keep the shipped 0.3.0 recipe (real faces)
            unlabelled = [p for p in pools if p is not None] if cfg.distill_target == "features" else [pools[0]]
            backbone = distill_backbone(name, cfg.distill_teacher, unlabelled, cfg.distill_steps, cfg, rng, log)
            member.load_state_dict(backbone, strict=False)
        elif init != "scratch":
            load_backbone(member, init)
        # a zero classifier starts every face at p=0.5; random weights on unnormalised
        # (BN-folded) ImageNet features start with logits of +-5 and a long recovery
        nn.init.zeros_(member.get_classifier().weight)
        nn.init.zeros_(member.get_classifier().bias)
        one = dataclasses.replace(recipe, init=init)
        if cfg.mode == "cached":
            soft = None
            if recipe.teacher:
                if recipe.teacher not in teachers:
                    raise ValueError(f"members.{name}.teacher: {recipe.teacher!r} must be a member trained before it")
                soft = torch.sigmoid(_images_logits(teachers[recipe.teacher], train_set[0]))
                log(f"{name}: distilling from the trained {recipe.teacher} (weight {recipe.kd_weight})")
            result = _train_cached(member, one, train_set, val, cfg, log, f"{name}[{Path(init).name}]", soft)
        else:
            result = {}
            if init != "scratch" and recipe.head.steps:
                result["head"] = run_phase(member, recipe.head, pools[0], val, cfg, rng, True, log, f"{name} head")
            result["finetune"] = run_phase(member, recipe.finetune, pools[0], val, cfg, rng, False, log, f"{name} finetune")
        for p in member.parameters():
            p.requires_grad = True
        candidates[init] = (member, result, result["finetune"]["best_auc"])
    best_init = max(candidates, key=lambda k: candidates[k][2])
    log(f"{name}: kept init {best_init} " + ", ".join(f"{k}: AUC {v[2]:.3f}" for k, v in candidates.items()))
    return candidates[best_init][0], {"chosen_init": best_init,
                                      "candidates": {k: {"init": k, **v[1]} for k, v in candidates.items()}}


def train(cfg: TrainConfig, cache_dir: Path = Path(".cache/faces"), log: Log = print) -> Path:
    """Run the whole recipe; returns the folder with detector.safetensors/json and metrics.

    Resumable: faces, the training set and each finished member are cached on disk, so running the
    same command again after an interruption continues after the last finished step.
    """
    if cfg.mode != "cached" and cfg.real_fakes:
        raise ValueError("real_fakes is used by mode 'cached' only; mode 'full' trains on self-blends")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    phases: dict[str, float] = {}

    def mark(phase: str, since: float) -> float:
        phases[phase] = round(phases.get(phase, 0.0) + time.time() - since, 1)
        log(f"[{time.time() - started:6.0f} s] {phase} done in {time.time() - since:.0f} s")
        return time.time()

    t = time.time()
    items, faces = prepare_faces(cfg, cache_dir, log)
    t = mark("faces_s", t)
    train_ids, held_ids = split_by_identity(items, cfg.holdout_share, cfg.seed if cfg.split_seed is None else cfg.split_seed)
    save_split(out / "split.json", train_ids, held_ids)
    train_pool, fake_pool = _pools(items, faces, train_ids)
    held_pool, held_fake = _pools(items, faces, held_ids)
    log(f"faces: {len(train_pool)} real from {len(train_pool.identities)} identities and "
        f"{len(fake_pool) if fake_pool else 0} fake from {len(fake_pool.identities) if fake_pool else 0} "
        f"family/identity groups for training; {len(held_pool)} real and {len(held_fake) if held_fake else 0} fake held out")
    val = _validation_set(held_pool, held_fake, cfg)
    # sha1 of the faces themselves, every pool: keys the member checkpoints and is recorded in the
    # report, so a retrain that found other faces (another decoder or detector version) says so
    faces_digest = hashlib.sha1("".join(_pool_digest(p) for p in (train_pool, fake_pool, held_pool, held_fake))
                                .encode()).hexdigest()

    report: dict = {"config": asdict(cfg), "faces": {
        "train": len(train_pool), "holdout": len(held_pool), "train_identities": len(train_pool.identities),
        "holdout_identities": len(held_pool.identities), "train_fake": len(fake_pool) if fake_pool else 0,
        "holdout_fake": len(held_fake) if held_fake else 0,
        "train_fake_families": sorted(fake_pool.tree) if fake_pool else [],  # the pool's first level
        "holdout_fake_families": sorted(held_fake.tree) if held_fake else [],
        "digest": faces_digest},
        "members": {}}
    detector_cfg = DetectorConfig(members=list(cfg.members), input_size=cfg.input_size, crop_margin=cfg.crop_margin,
                                  mean=MEAN, std=STD, drop_rate=cfg.drop_rate, version=cfg.version, trained=True)
    ensemble = EnsembleDetector(detector_cfg)
    train_set = None
    if cfg.mode == "cached":
        train_set = cached_sbi_set(train_pool, cfg, cache_dir, fake_pool)
        log(f"training set: {len(train_set[0])} crops ({int(train_set[1].sum())} fake)")
        t = mark("train_set_s", t)
    checkpoints = Checkpoints(Path(cache_dir) / "members", cfg, faces_digest)
    trained: dict[str, nn.Module] = {}
    resumed: list[str] = []  # members taken from an earlier (interrupted or shared) run's checkpoints
    for name, recipe in cfg.members.items():
        member = create_member(name, cfg.drop_rate)
        result = checkpoints.load(name, member)
        if result is not None:
            log(f"{name}: resumed from {checkpoints.folder} (finished in an earlier run)")
            # the phase took what it took when it ran, not the seconds it takes to load it now
            phases[f"member_{name}_s"] = float(result.get("seconds", 0.0))
            resumed.append(name)
            t = time.time()
        else:
            member, result = _train_member(name, recipe, cfg, (train_pool, fake_pool), train_set, val, trained, rng, log)
            result["seconds"] = round(time.time() - t, 1)
            checkpoints.save(name, member, result)
            t = mark(f"member_{name}_s", t)
        ensemble.members[name].load_state_dict(member.state_dict())
        trained[name] = member
        report["members"][name] = result

    logits = np.stack([member_logits(m, val[0]) for m in ensemble.members.values()], axis=1)
    stack_auc, mean_auc = _stacking_cv(logits, val[1], cfg.seed)
    combiner: Literal["mean", "stacking"] = "stacking" if stack_auc > mean_auc + 0.005 else "mean"  # a tie keeps the simpler mean
    if combiner == "stacking":
        from sklearn.linear_model import LogisticRegression

        lr = LogisticRegression().fit(logits, val[1])
        ensemble.stacker.weight.data = torch.tensor(lr.coef_, dtype=torch.float32)
        ensemble.stacker.bias.data = torch.tensor(lr.intercept_, dtype=torch.float32)
    ensemble.config.combiner = combiner
    with torch.no_grad():
        raw = ensemble.combine(torch.from_numpy(logits), calibrated=False).numpy()
    ensemble.config.calibration = fit_calibration(raw, val[1])
    probs = apply_calibration(raw, ensemble.config.calibration)
    ensemble.config.threshold = float(round(best_threshold(val[1], probs), 4))
    report["combiner"] = {"chosen": combiner, "holdout_auc_stacking_cv": stack_auc, "holdout_auc_mean": mean_auc,
                          "threshold": ensemble.config.threshold, "calibration": ensemble.config.calibration,
                          "holdout_ece_uncalibrated": binary_metrics(val[1], raw, 0.5)["ece"],
                          "holdout_metrics": binary_metrics(val[1], probs, ensemble.config.threshold)}
    mark("combine_calibrate_s", t)
    report["seconds"] = time.time() - started
    # a resumed run's total counts the resumed members' own training time as well
    phases["total_s"] = round(report["seconds"] + sum(phases[f"member_{n}_s"] for n in resumed), 1)

    report["phases"] = phases
    ensemble.config.training = {"data": str(cfg.data), "faces": report["faces"], "combiner": report["combiner"],
                                "seconds": round(report["seconds"]), "phases": phases, "resumed_members": resumed,
                                "recipe": {k: v for k, v in asdict(cfg).items() if k not in ("out", "data")}}
    save_detector(ensemble, out)
    (out / "train_report.json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    log(f"saved detector to {out} (combiner {combiner}, calibration {ensemble.config.calibration}, "
        f"threshold {ensemble.config.threshold}, {report['seconds']:.0f} s)")
    return out


def load_train_config(path: str | Path, overrides: dict | None = None) -> TrainConfig:
    """configs/train.yaml -> TrainConfig, every value checked (type, range, choices) by the same
    loader as the analysis settings; `overrides` are top-level keys (e.g. out, data)."""
    from pipeline.config import load_settings, read_yaml

    data = read_yaml(Path(path))
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return load_settings(TrainConfig, data, "training setting")
