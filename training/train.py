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
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import timm
import torch
from safetensors.torch import load_file
from torch import nn

from stages.classify import to_model_input
from stages.detect import DetectSettings, FaceDetector
from stages.ensemble import DetectorConfig, EnsembleDetector, create_member, save_detector
from training.augment import build_train_transform
from training.cached import LateBlocks, build_sbi_set, early_features, train_late_blocks
from training.data import FaceSet, MediaItem, extract_all, read_dataset, save_split, split_by_identity
from training.metrics import best_threshold, binary_metrics
from training.sbi_batches import FacePool, fixed_sbi_set, normalise, sbi_batch

Log = Callable[[str], None]


@dataclass
class PhaseConfig:
    lr: float
    steps: int = 0               # mode "full": optimiser steps on fresh batches
    epochs: int = 0              # mode "cached": passes over the fixed pseudo-fake set
    schedule: str = "cosine"     # cosine | step (x0.1 at 1/2 and 3/4 of the run)


@dataclass
class MemberRecipe:
    init: str | list[str] = "scratch"  # ImageNet safetensors path, "scratch", "distill", or a list to compare
    frozen_blocks: int = 3       # mode "cached": blocks[:k] stay frozen and are computed once
    head: PhaseConfig = field(default_factory=lambda: PhaseConfig(1e-3, steps=100, epochs=3))
    finetune: PhaseConfig = field(default_factory=lambda: PhaseConfig(3e-4, steps=400, epochs=8))


@dataclass
class TrainConfig:
    data: str                                   # manifest TSV or folder with real/ fake/
    out: str = "runs/latest"
    mode: str = "cached"                        # cached: CPU recipe (training/cached.py) | full: whole network
    train_pairs: int = 1500                     # mode "cached": size of the fixed pseudo-fake set
    members: dict[str, MemberRecipe] = field(default_factory=dict)
    distill_teacher: str = ""                   # tf_efficientnet_lite0 ImageNet safetensors
    distill_steps: int = 300
    frames_per_video: int = 16
    holdout_share: float = 0.2
    val_pairs: int = 200
    batch_pairs: int = 8                        # a batch is 2x this: each real beside its fake
    eval_every: int = 100
    patience: int = 3                           # evaluations without improvement before stopping
    input_size: int = 224
    crop_margin: float = 0.3
    drop_rate: float = 0.2
    seed: int = 0
    threads: int = 0                            # 0: torch's default
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


def _lr_at(phase: PhaseConfig, step: int) -> float:
    if phase.schedule == "step":
        return phase.lr * (0.1 ** (int(step >= phase.steps / 2) + int(step >= 3 * phase.steps / 4)))
    return phase.lr * 0.5 * (1 + math.cos(math.pi * step / max(phase.steps, 1)))


@torch.no_grad()
def member_logits(model: nn.Module, crops: np.ndarray, batch: int = 64) -> np.ndarray:
    model.eval()
    out = [model(to_model_input(crops[i:i + batch], MEAN, STD, crops.shape[1], torch.device("cpu"))).float().squeeze(1)
           for i in range(0, len(crops), batch)]
    return torch.cat(out).numpy() if out else np.zeros(0, np.float32)


def _auc(model: nn.Module, val: tuple[np.ndarray, np.ndarray]) -> float:
    return binary_metrics(val[1], 1 / (1 + np.exp(-member_logits(model, val[0]))), 0.5)["roc_auc"]


def _freeze_backbone(model: nn.Module, frozen: bool) -> list[nn.Parameter]:
    head = model.get_classifier()
    for p in model.parameters():
        p.requires_grad = not frozen
    for p in head.parameters():
        p.requires_grad = True
    return [p for p in model.parameters() if p.requires_grad]


def run_phase(model: nn.Module, phase: PhaseConfig, pool: FacePool, val, cfg: TrainConfig, rng: np.random.Generator,
              frozen: bool, log: Log, name: str) -> dict:
    """One training phase with early stopping on validation AUC; the best weights are restored."""
    params = _freeze_backbone(model, frozen)
    opt = torch.optim.AdamW(params, lr=phase.lr, weight_decay=1e-4 if frozen else 1e-2)
    loss_fn = nn.BCEWithLogitsLoss()
    transform = build_train_transform(cfg.input_size)
    best = {"auc": _auc(model, val), "step": 0, "state": copy.deepcopy(model.state_dict())}
    history = [{"step": 0, "val_auc": best["auc"]}]
    log(f"{name}: start val AUC {best['auc']:.3f}")
    stale, losses, t0 = 0, [], time.time()
    for step in range(1, phase.steps + 1):
        model.train()
        if frozen:  # frozen BN statistics: the ImageNet ones are better than a 16-image batch's
            for m in model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        for group in opt.param_groups:
            group["lr"] = _lr_at(phase, step - 1)
        x, y = sbi_batch(pool, cfg.batch_pairs, rng, transform, cfg.crop_margin, cfg.input_size, MEAN, STD)
        loss = loss_fn(model(x).squeeze(1), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
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


def distill_backbone(student_arch: str, teacher_path: str, pool: FacePool, steps: int, cfg: TrainConfig,
                     rng: np.random.Generator, log: Log) -> dict[str, torch.Tensor]:
    """Teach `student_arch` to reproduce the ImageNet logits of EfficientNet-Lite0 on face frames
    (no labels needed): gives the student ImageNet-like features where no ImageNet weights exist."""
    teacher = timm.create_model("tf_efficientnet_lite0", num_classes=1000)
    teacher.load_state_dict(load_file(teacher_path))
    teacher.eval()
    student = timm.create_model(student_arch, num_classes=1000, drop_rate=cfg.drop_rate)
    opt = torch.optim.AdamW(student.parameters(), lr=1e-3, weight_decay=1e-2)
    transform = build_train_transform(cfg.input_size)
    temperature, t0 = 2.0, time.time()
    for step in range(1, steps + 1):
        for g in opt.param_groups:
            g["lr"] = _lr_at(PhaseConfig(1e-3, steps=steps), step - 1)
        crops = []
        for _ in range(2 * cfg.batch_pairs):
            ctx, box, _ = pool.draw(rng)
            crops.append(transform(ctx))  # the whole context crop: faces and what surrounds them
        x = normalise(torch.stack(crops), MEAN, STD)
        with torch.no_grad():
            target = torch.log_softmax(teacher(x) / temperature, dim=1)
        student.train()
        pred = torch.log_softmax(student(x) / temperature, dim=1)
        loss = nn.functional.kl_div(pred, target, log_target=True, reduction="batchmean") * temperature ** 2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == steps:
            log(f"distill {student_arch}: step {step}/{steps} KL {loss.item():.3f} ({step * len(crops) / (time.time() - t0):.1f} img/s)")
    return {k: v for k, v in student.state_dict().items() if not k.startswith("classifier.")}


def cached_sbi_set(pool: FacePool, cfg: TrainConfig, cache_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed pseudo-fake set, stored (safetensors) so a re-run with the same data skips it."""
    from safetensors.torch import save_file

    content = hashlib.sha1()  # the faces themselves, so another dataset never hits this entry
    for identity in pool.identities:
        for fs, k in pool.by_identity[identity]:
            content.update(fs.boxes[k].tobytes())
            content.update(fs.landmarks[k].tobytes())
            content.update(np.ascontiguousarray(fs.contexts[k][::8, ::8]).tobytes())
    key = hashlib.sha1(json.dumps([content.hexdigest(), cfg.train_pairs, cfg.seed, cfg.input_size,
                                   cfg.crop_margin]).encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"sbi-{key}.safetensors"
    if path.is_file():
        data = load_file(str(path))
        return data["images"], data["labels"]
    rng = np.random.default_rng(cfg.seed + 2)
    with torch.random.fork_rng():  # the set depends only on its key; the global RNG is left as it was
        torch.manual_seed(cfg.seed + 2)
        images, labels = build_sbi_set(pool, cfg.train_pairs, rng, cfg.crop_margin, cfg.input_size, augment=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"images": images.contiguous(), "labels": labels}, str(path))
    return images, labels


def _train_cached(member: nn.Module, recipe: MemberRecipe, train_set, val, cfg: TrainConfig, log: Log, name: str) -> dict:
    """Head, then late blocks, on features of the frozen early blocks computed once."""
    t0 = time.time()
    k = recipe.frozen_blocks
    feats = early_features(member, train_set[0], k, MEAN, STD)
    val_feats = early_features(member, torch.from_numpy(val[0]).permute(0, 3, 1, 2).contiguous(), k, MEAN, STD)
    log(f"{name}: cached blocks[:{k}] features {tuple(feats.shape[1:])} for {len(feats)} crops in {time.time() - t0:.0f} s")
    late = LateBlocks(member, k)
    result = {"frozen_blocks": k, "feature_seconds": time.time() - t0}
    train, valid = (feats, train_set[1]), (val_feats, val[1])
    if recipe.init != "scratch" and recipe.head.epochs:
        result["head"] = train_late_blocks(late, train, valid, recipe.head.epochs, recipe.head.lr, recipe.head.schedule,
                                           True, cfg.seed, log, f"{name} head", patience=cfg.patience)
    result["finetune"] = train_late_blocks(late, train, valid, recipe.finetune.epochs, recipe.finetune.lr,
                                           recipe.finetune.schedule, False, cfg.seed, log, f"{name} finetune",
                                           patience=cfg.patience, freeze_bn=recipe.init != "scratch")
    return result


def _stacking_cv(logits: np.ndarray, labels: np.ndarray, seed: int, folds: int = 5) -> tuple[float, float]:
    """Out-of-fold AUC of the stacking layer vs the plain mean, on held-out identities."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    oof = np.zeros(len(labels))
    for train_idx, test_idx in StratifiedKFold(folds, shuffle=True, random_state=seed).split(logits, labels):
        oof[test_idx] = LogisticRegression().fit(logits[train_idx], labels[train_idx]).predict_proba(logits[test_idx])[:, 1]
    mean_prob = (1 / (1 + np.exp(-logits))).mean(axis=1)
    return binary_metrics(labels, oof, 0.5)["roc_auc"], binary_metrics(labels, mean_prob, 0.5)["roc_auc"]


def prepare_faces(cfg: TrainConfig, cache_dir: Path, log: Log) -> tuple[list[MediaItem], dict[Path, FaceSet]]:
    items = [i for i in read_dataset(cfg.data) if i.label == 0 and (not i.split or i.split in cfg.splits)]
    log(f"{len(items)} real training items; extracting faces (cached in {cache_dir})")
    detector = FaceDetector(DetectSettings(min_confidence=0.9))
    faces = extract_all(items, detector, cache_dir, cfg.frames_per_video)
    return items, faces


def train(cfg: TrainConfig, cache_dir: Path = Path(".cache/faces"), log: Log = print) -> Path:
    """Run the whole recipe; returns the folder with detector.safetensors/json and metrics."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    items, faces = prepare_faces(cfg, cache_dir, log)
    train_ids, held_ids = split_by_identity(items, cfg.holdout_share, cfg.seed)
    save_split(out / "split.json", train_ids, held_ids)
    by_split = {s: [(i.identity, faces[i.path]) for i in items if i.path in faces and (i.identity in ids)]
                for s, ids in (("train", train_ids), ("holdout", held_ids))}
    train_pool, held_pool = FacePool(by_split["train"]), FacePool(by_split["holdout"])
    log(f"faces: {len(train_pool)} from {len(train_pool.identities)} identities for training, "
        f"{len(held_pool)} from {len(held_pool.identities)} held out")
    val = fixed_sbi_set(held_pool, cfg.val_pairs, cfg.seed + 1, cfg.crop_margin, cfg.input_size)

    report: dict = {"config": asdict(cfg), "faces": {"train": len(train_pool), "holdout": len(held_pool),
                    "train_identities": len(train_pool.identities), "holdout_identities": len(held_pool.identities)},
                    "members": {}}
    detector_cfg = DetectorConfig(members=list(cfg.members), input_size=cfg.input_size, crop_margin=cfg.crop_margin, mean=MEAN, std=STD,
                                  drop_rate=cfg.drop_rate, version=cfg.version, trained=True)
    ensemble = EnsembleDetector(detector_cfg)
    train_set = None
    if cfg.mode == "cached":
        t0 = time.time()
        train_set = cached_sbi_set(train_pool, cfg, cache_dir)
        log(f"pseudo-fake training set: {len(train_set[0])} crops in {time.time() - t0:.0f} s")
    for name, recipe in cfg.members.items():
        # `init` may list several starts (e.g. [scratch, distill]): each is trained the same way
        # on the same data and the one with the best held-out AUC is kept.
        inits = recipe.init if isinstance(recipe.init, list) else [recipe.init]
        candidates = {}
        for init in inits:
            member = create_member(name, cfg.drop_rate)
            if init == "distill":
                log(f"{name}: distilling from EfficientNet-Lite0 ({cfg.distill_steps} steps)")
                member.load_state_dict(distill_backbone(name, cfg.distill_teacher, train_pool, cfg.distill_steps, cfg, rng, log), strict=False)
            elif init != "scratch":
                load_backbone(member, init)
            # a zero classifier starts every face at p=0.5; random weights on unnormalised
            # (BN-folded) ImageNet features start with logits of +-5 and a long recovery
            nn.init.zeros_(member.get_classifier().weight)
            nn.init.zeros_(member.get_classifier().bias)
            one = dataclasses.replace(recipe, init=init)
            if cfg.mode == "cached":
                result = _train_cached(member, one, train_set, val, cfg, log, f"{name}[{Path(init).name}]")
            else:
                result = {}
                if init != "scratch" and recipe.head.steps:
                    result["head"] = run_phase(member, recipe.head, train_pool, val, cfg, rng, True, log, f"{name} head")
                result["finetune"] = run_phase(member, recipe.finetune, train_pool, val, cfg, rng, False, log, f"{name} finetune")
            for p in member.parameters():
                p.requires_grad = True
            candidates[init] = (member, result, result["finetune"]["best_auc"])
        best_init = max(candidates, key=lambda k: candidates[k][2])
        ensemble.members[name].load_state_dict(candidates[best_init][0].state_dict())
        report["members"][name] = {"chosen_init": best_init,
                                   "candidates": {k: {"init": k, **v[1]} for k, v in candidates.items()}}
        log(f"{name}: kept init {best_init} " + ", ".join(f"{k}: AUC {v[2]:.3f}" for k, v in candidates.items()))

    logits = np.stack([member_logits(m, val[0]) for m in ensemble.members.values()], axis=1)
    stack_auc, mean_auc = _stacking_cv(logits, val[1], cfg.seed)
    combiner = "stacking" if stack_auc > mean_auc + 0.005 else "mean"  # a tie keeps the simpler mean
    if combiner == "stacking":
        from sklearn.linear_model import LogisticRegression

        lr = LogisticRegression().fit(logits, val[1])
        ensemble.stacker.weight.data = torch.tensor(lr.coef_, dtype=torch.float32)
        ensemble.stacker.bias.data = torch.tensor(lr.intercept_, dtype=torch.float32)
    ensemble.config.combiner = combiner
    with torch.no_grad():
        probs = ensemble.combine(torch.from_numpy(logits)).numpy()
    ensemble.config.threshold = float(round(best_threshold(val[1], probs), 4))
    report["combiner"] = {"chosen": combiner, "holdout_auc_stacking_cv": stack_auc, "holdout_auc_mean": mean_auc,
                          "threshold": ensemble.config.threshold,
                          "holdout_metrics": binary_metrics(val[1], probs, ensemble.config.threshold)}
    report["seconds"] = time.time() - started
    ensemble.config.training = {"data": str(cfg.data), "faces": report["faces"], "combiner": report["combiner"],
                                "seconds": round(report["seconds"])}
    save_detector(ensemble, out)
    (out / "train_report.json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    log(f"saved detector to {out} (combiner {combiner}, threshold {ensemble.config.threshold}, {report['seconds']:.0f} s)")
    return out


def _numbers(cls: type, values: dict, where: str) -> dict:
    """YAML 1.1 reads 3e-3 (no dot) as a string: make such values of int/float fields numbers."""
    kinds = {f.name: f.type for f in dataclasses.fields(cls)}  # type names as strings (postponed annotations)
    out = dict(values)
    for key, value in values.items():
        if kinds.get(key) in ("float", "int") and isinstance(value, str):
            try:
                out[key] = float(value) if kinds[key] == "float" else int(value)
            except ValueError:
                raise ValueError(f"{where}{key}: expected a number, got {value!r}") from None
    return out


def load_train_config(path: str | Path, overrides: dict | None = None) -> TrainConfig:
    """configs/train.yaml -> TrainConfig; `overrides` are top-level keys (e.g. out, data)."""
    import yaml

    data = yaml.safe_load(Path(path).read_text()) or {}
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    members = {}
    for name, spec in (data.pop("members", None) or {}).items():
        spec = dict(spec or {})
        phases = {k: PhaseConfig(**_numbers(PhaseConfig, spec.pop(k), f"members.{name}.{k}."))
                  for k in ("head", "finetune") if k in spec}
        members[name] = MemberRecipe(**_numbers(MemberRecipe, spec, f"members.{name}."), **phases)
    unknown = set(data) - set(TrainConfig.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown training settings: {', '.join(sorted(unknown))}")
    return TrainConfig(members=members, **_numbers(TrainConfig, data, ""))
