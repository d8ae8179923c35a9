"""Train the ensemble on self-blended pseudo-fakes and save it as a detector.

Recipe (configs/train.yaml): faces of real media are split by identity; each member trains on
batches of real faces and their self-blended fakes, first the head alone on a frozen backbone,
then the whole network with a cosine (or step) schedule, keeping the checkpoint with the best
AUC on held-out identities and stopping when it stops improving. The combiner (mean or a stacking
layer) is then chosen on the held-out identities, which no member trained on. With `replicas`,
the whole recipe runs once per seed on the same split and every seed's members are kept (a seed
ensemble: one retrain of this recipe differs from the next as much as recipes differ).
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from scipy.special import expit
from timm.models.efficientnet import EfficientNet
from torch import nn

from deepfake_detect.stages.classify import to_model_input
from deepfake_detect.stages.detect import DetectSettings, create_face_detector
from deepfake_detect.stages.ensemble import MEMBER_REGISTRY, DetectorConfig, EnsembleDetector, create_member, save_detector
from deepfake_detect.training.augment import build_train_transform
from deepfake_detect.training.cached import LateBlocks, RealBalance, early_features, lr_schedule, train_late_blocks
from deepfake_detect.training.data import SPLIT_FILE, FaceSet, MediaItem, extract_all, read_dataset, save_split, split_by_identity
from deepfake_detect.training.distill import distill_backbone
from deepfake_detect.training.metrics import binary_metrics, sharpness_by_label
from deepfake_detect.training.operating_point import fit_operating_point
from deepfake_detect.training.recipe import (
    MEAN,
    STD,
    Log,
    MemberRecipe,
    PhaseConfig,
    TrainConfig,
    ensemble_member_name,
    member_detail,
    replica_configs,
    split_seed,
)
from deepfake_detect.training.run_cache import Checkpoints, cached_autoencoder, cached_sbi_set, pool_digest
from deepfake_detect.training.sbi_batches import FacePool, fixed_face_set, fixed_sbi_set, sbi_batch


def load_backbone(model: nn.Module, path: str | Path) -> list[str]:
    """Load ImageNet weights into a one-logit member, dropping the 1000-class classifier."""
    state = {k: v for k, v in load_file(str(path)).items() if not k.startswith("classifier.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith("classifier.") for k in missing):
        raise ValueError(f"{path} does not fit {type(model).__name__}: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return missing


@torch.no_grad()
def member_logits(model: nn.Module, crops: np.ndarray, batch: int = 64, detail_size: int | None = None) -> np.ndarray:
    model.eval()
    cpu = torch.device("cpu")
    out = [model(to_model_input(crops[i:i + batch], MEAN, STD, crops.shape[1], cpu, detail_size)).float().squeeze(1)
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


def _train_cached(member: EfficientNet, recipe: MemberRecipe, train_sets: list[tuple[torch.Tensor, torch.Tensor]], val,
                  cfg: TrainConfig, log: Log, name: str, soft_targets: list[torch.Tensor] | None = None) -> dict:
    """Head, then late blocks, on features of the frozen early blocks computed once per training set."""
    t0 = time.time()
    k = recipe.frozen_blocks
    detail = member_detail(cfg)
    feats = [early_features(member, images, k, MEAN, STD, detail_size=detail) for images, _ in train_sets]
    val_feats = early_features(member, torch.from_numpy(val[0]).permute(0, 3, 1, 2).contiguous(), k, MEAN, STD,
                               detail_size=detail)
    log(f"{name}: cached blocks[:{k}] features {tuple(feats[0].shape[1:])} for {len(train_sets)} x {len(feats[0])} crops "
        f"in {time.time() - t0:.0f} s")
    late = LateBlocks(member, k)
    result: dict[str, Any] = {"frozen_blocks": k, "feature_seconds": time.time() - t0}
    train, valid = [(f, labels) for f, (_, labels) in zip(feats, train_sets)], (val_feats, val[1])
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


def prepare_faces(cfg: TrainConfig, cache_dir: Path, log: Log) -> tuple[list[MediaItem], dict[Path, FaceSet]]:
    """Faces of every item of the training splits: real ones, and real fakes where cfg.real_fakes asks."""
    items = [i for i in read_dataset(cfg.data) if (i.label == 0 or cfg.real_fakes) and (not i.split or i.split in cfg.splits)]
    log(f"{sum(i.label == 0 for i in items)} real and {sum(i.label == 1 for i in items)} fake training items; "
        f"extracting faces (cached in {cache_dir})")
    detector = create_face_detector(DetectSettings(min_confidence=0.9))
    faces = extract_all(items, detector, cache_dir, cfg.frames_per_video, with_landmarks68=cfg.sbi_landmarks == 68)
    return items, faces


def face_pools(items: list[MediaItem], faces: dict[Path, FaceSet], identities: set[str],
               real_balance: RealBalance = "identity") -> tuple[FacePool, FacePool | None]:
    """Real faces keyed by identity (or by (source, identity) with real_balance "source", so that each
    source counts alike: one repository of 150 small photos would otherwise be a third of all real
    draws); real fakes keyed by (family, identity) so each family counts alike."""
    real = [((i.source or "unknown", i.identity) if real_balance == "source" else i.identity, faces[i.path])
            for i in items if i.label == 0 and i.path in faces and i.identity in identities]
    fake = [((i.group, i.identity), faces[i.path]) for i in items
            if i.label == 1 and i.path in faces and i.identity in identities and len(faces[i.path])]
    return FacePool(real), (FacePool(fake) if fake else None)


def validation_set(held_real: FacePool, held_fake: FacePool | None, cfg: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """Held-out identities: each real crop beside its self-blended fake, plus real fakes and as many reals."""
    crops, labels = fixed_sbi_set(held_real, cfg.val_pairs, cfg.seed + 1, cfg.crop_margin, cfg.input_size)
    if held_fake is not None and cfg.val_fakes:
        fakes = fixed_face_set(held_fake, cfg.val_fakes, cfg.seed + 3, 1, cfg.crop_margin, cfg.input_size)
        reals = fixed_face_set(held_real, cfg.val_fakes, cfg.seed + 4, 0, cfg.crop_margin, cfg.input_size)
        crops = np.concatenate([crops, fakes[0], reals[0]])
        labels = np.concatenate([labels, fakes[1], reals[1]])
    return crops, labels


def _images_logits(model: nn.Module, images: torch.Tensor, detail_size: int | None) -> torch.Tensor:
    """Logits of a whole member for uint8 (N, 3, S, S) images (a teacher's view of the training set)."""
    return torch.from_numpy(member_logits(model, images.permute(0, 2, 3, 1).numpy(), detail_size=detail_size))


def _train_member(name: str, recipe: MemberRecipe, cfg: TrainConfig, pools: tuple[FacePool, FacePool | None],
                  train_sets, val, teachers: dict[str, nn.Module], rng: np.random.Generator, log: Log) -> tuple[nn.Module, dict]:
    """Train every start listed in `recipe.init` and keep the one with the best held-out AUC."""
    inits = recipe.init if isinstance(recipe.init, list) else [recipe.init]
    candidates = {}
    for init in inits:
        member = create_member(name, cfg.drop_rate)
        assert isinstance(member, EfficientNet)  # every MEMBER_REGISTRY entry is a timm EfficientNet-family model
        if init == "distill":
            log(f"{name}: distilling from {cfg.distill_teacher_arch} ({cfg.distill_steps} steps, {cfg.distill_target})")
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
                soft = [torch.sigmoid(_images_logits(teachers[recipe.teacher], images, member_detail(cfg)))
                        for images, _ in train_sets]
                log(f"{name}: distilling from the trained {recipe.teacher} (weight {recipe.kd_weight})")
            result = _train_cached(member, one, train_sets, val, cfg, log, f"{name}[{Path(init).name}]", soft)
        else:
            result = {}
            if init != "scratch" and recipe.head.steps:
                result["head"] = run_phase(member, recipe.head, pools[0], val, cfg, rng, True, log, f"{name} head")
            result["finetune"] = run_phase(member, recipe.finetune, pools[0], val, cfg, rng, False, log, f"{name} finetune")
        for p in member.parameters():
            p.requires_grad = True
        candidates[init] = (member, result, result["finetune"]["best_auc"])
    best_init = max(candidates, key=lambda k: candidates[k][2])
    aucs = ", ".join(f"{Path(k).name} {v[2]:.3f}" for k, v in candidates.items())
    log(f"{name}: held-out AUC {aucs}" + (f"; kept {Path(best_init).name}" if len(candidates) > 1 else ""))
    return candidates[best_init][0], {"chosen_init": best_init,
                                      "candidates": {k: {"init": k, **v[1]} for k, v in candidates.items()}}


class PhaseClock:
    """Seconds per phase of a run (written into detector.json), with a progress line as each ends."""

    def __init__(self, log: Log):
        self.log, self.started, self.phases = log, time.time(), dict[str, float]()

    def mark(self, phase: str, since: float) -> float:
        self.phases[phase] = round(self.phases.get(phase, 0.0) + time.time() - since, 1)
        self.log(f"[{time.time() - self.started:6.0f} s] {phase} done in {time.time() - since:.0f} s")
        return time.time()


@dataclass
class Pools:
    """The faces on each side of the identity split: real faces, and real fakes where the data has them."""

    train_real: FacePool
    train_fake: FacePool | None
    held_real: FacePool
    held_fake: FacePool | None


@dataclass
class ReplicaResult:
    """What one seed's run of the recipe gives the ensemble."""

    members: dict[str, nn.Module]   # ensemble member name -> trained member
    architectures: dict[str, dict]  # ensemble member name -> its timm arguments
    reports: dict[str, dict]        # ensemble member name -> its training report
    resumed: list[str]              # members taken from an earlier run's checkpoints
    val: tuple[np.ndarray, np.ndarray]
    set_sharpness: dict | None = None  # mode "cached": how far sharpness alone tells its training set's labels


def _train_replica(cfg: TrainConfig, replicas: int, pools: Pools, faces_digest: str, cache_dir: Path,
                   clock: PhaseClock, log: Log) -> ReplicaResult:
    """Every member of the recipe with one seed: its training set, validation crops and draws."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    val = validation_set(pools.held_real, pools.held_fake, cfg)
    t = time.time()
    train_sets, set_sharpness = [], None
    if cfg.mode == "cached":
        autoencoder = cached_autoencoder(pools.train_real, cfg, cache_dir, log) if cfg.ae_pairs else None
        train_sets = [cached_sbi_set(pools.train_real, cfg, cache_dir, pools.train_fake, index=i, autoencoder=autoencoder)
                      for i in range(cfg.sbi_sets)]
        train_set = train_sets[0]
        set_sharpness = sharpness_by_label(train_set[0].numpy(), train_set[1].numpy())
        log(f"training set 1 of {cfg.sbi_sets} (seed {cfg.seed}): {len(train_set[0])} crops "
            f"({int(train_set[1].sum())} fake); sharpness median real {set_sharpness['real_median']:.0f}, "
            f"fake {set_sharpness['fake_median']:.0f}, "
            f"as a fake score AUC {set_sharpness['roc_auc']:.3f}")
        t = clock.mark("train_set_s", t)
    checkpoints = Checkpoints(Path(cache_dir) / "members", cfg, faces_digest)
    result = ReplicaResult({}, {}, {}, [], val, set_sharpness)
    trained: dict[str, nn.Module] = {}  # by recipe name: a later member's teacher
    for name, recipe in cfg.members.items():
        label = ensemble_member_name(name, cfg, replicas)
        member = create_member(name, cfg.drop_rate)
        report = checkpoints.load(name, member)
        if report is not None:
            log(f"{label}: resumed from {checkpoints.folder} (finished in an earlier run)")
            # the phase took what it took when it ran, not the seconds it takes to load it now
            clock.phases[f"member_{label}_s"] = float(report.get("seconds", 0.0))
            result.resumed.append(label)
            t = time.time()
        else:
            member, report = _train_member(name, recipe, cfg, (pools.train_real, pools.train_fake), train_sets, val,
                                           trained, rng, log)
            report["seconds"] = round(time.time() - t, 1)
            checkpoints.save(name, member, report)
            t = clock.mark(f"member_{label}_s", t)
        trained[name] = member
        result.members[label], result.reports[label] = member, report
        result.architectures[label] = dict(MEMBER_REGISTRY[name])
    return result


def assemble_detector(members: dict[str, nn.Module], architectures: dict[str, dict], cfg: TrainConfig,
                      val: tuple[np.ndarray, np.ndarray], version: str) -> tuple[EnsembleDetector, dict]:
    """Trained members -> a detector whose combiner, calibration and threshold are fitted on the
    held-out identities, which no member trained on; returns it with the combiner's report."""
    detector_cfg = DetectorConfig(members=list(members), architectures=architectures,
                                  input_size=cfg.input_size, crop_margin=cfg.crop_margin, detail_size=cfg.detail_size,
                                  mean=MEAN, std=STD, drop_rate=cfg.drop_rate, version=version, trained=True)
    ensemble = EnsembleDetector(detector_cfg)
    for name, member in members.items():
        ensemble.members[name].load_state_dict(member.state_dict())
    # scored as analyze will score them: with the detector's detail ceiling
    logits = np.stack([member_logits(m, val[0], detail_size=cfg.detail_size) for m in members.values()], axis=1)
    return ensemble, fit_operating_point(ensemble, logits, val[1], cfg.seed)


def train(cfg: TrainConfig, cache_dir: Path = Path(".cache/faces"), log: Log = print) -> Path:
    """Run the whole recipe; returns the folder with detector.safetensors/json and metrics.

    Resumable: faces, the training set and each finished member are cached on disk, so running the
    same command again after an interruption continues after the last finished step. With
    `replicas` > 1, each seed's own two-member detector is also saved, in OUT/seeds/seed<N>.
    """
    if cfg.mode != "cached" and cfg.real_fakes:
        raise ValueError("real_fakes is used by mode 'cached' only; mode 'full' trains on self-blends")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    clock = PhaseClock(log)

    t = time.time()
    items, faces = prepare_faces(cfg, cache_dir, log)
    t = clock.mark("faces_s", t)
    train_ids, held_ids = split_by_identity(items, cfg.holdout_share, split_seed(cfg))
    save_split(out / SPLIT_FILE, train_ids, held_ids)
    pools = Pools(*face_pools(items, faces, train_ids, cfg.real_balance), *face_pools(items, faces, held_ids, cfg.real_balance))
    log(f"faces: {len(pools.train_real)} real from {len(pools.train_real.identities)} identities and "
        f"{len(pools.train_fake) if pools.train_fake else 0} fake from "
        f"{len(pools.train_fake.identities) if pools.train_fake else 0} family/identity groups for training; "
        f"{len(pools.held_real)} real and {len(pools.held_fake) if pools.held_fake else 0} fake held out")
    # sha1 of the faces themselves, every pool: keys the member checkpoints and is recorded in the
    # report, so a retrain that found other faces (another decoder or detector version) says so
    faces_digest = hashlib.sha1("".join(pool_digest(p) for p in (pools.train_real, pools.train_fake, pools.held_real,
                                                                    pools.held_fake)).encode()).hexdigest()
    report: dict = {"config": asdict(cfg), "faces": {
        "train": len(pools.train_real), "holdout": len(pools.held_real),
        "train_identities": len(pools.train_real.identities), "holdout_identities": len(pools.held_real.identities),
        "train_fake": len(pools.train_fake) if pools.train_fake else 0,
        "holdout_fake": len(pools.held_fake) if pools.held_fake else 0,
        "train_fake_families": sorted(pools.train_fake.tree) if pools.train_fake else [],  # the pool's first level
        "holdout_fake_families": sorted(pools.held_fake.tree) if pools.held_fake else [],
        "digest": faces_digest},
        "members": {}}

    members: dict[str, nn.Module] = {}
    architectures: dict[str, dict] = {}
    resumed: list[str] = []
    vals: list[tuple[np.ndarray, np.ndarray]] = []   # each seed's held-out crops; the base seed's fit the combiner
    for replica in replica_configs(cfg):
        if cfg.replicas > 1:
            log(f"seed {replica.seed} ({replica.seed - cfg.seed + 1} of {cfg.replicas})")
        result = _train_replica(replica, cfg.replicas, pools, faces_digest, cache_dir, clock, log)
        members.update(result.members)
        architectures.update(result.architectures)
        report["members"].update(result.reports)
        resumed += result.resumed
        vals.append(result.val)
        if result.set_sharpness:
            report.setdefault("training_set_sharpness", {})[replica.seed] = result.set_sharpness
        if cfg.replicas > 1:
            # the seed's own detector, so the ensemble can be measured against each of its seeds
            single, combined = assemble_detector(result.members, result.architectures, replica, result.val,
                                                 f"{cfg.version}+seed{replica.seed}")
            single.config.training = {"data": str(cfg.data), "faces": report["faces"], "combiner": combined}
            save_detector(single, out / "seeds" / f"seed{replica.seed}")
            report.setdefault("seeds", {})[replica.seed] = combined
    t = time.time()
    ensemble, report["combiner"] = assemble_detector(members, architectures, cfg, vals[0], cfg.version)
    clock.mark("combine_calibrate_s", t)
    report["seconds"] = time.time() - clock.started
    phases = clock.phases
    # a resumed run's total counts the resumed members' own training time as well
    phases["total_s"] = round(report["seconds"] + sum(phases[f"member_{n}_s"] for n in resumed), 1)

    report["phases"] = phases
    ensemble.config.training = {"data": str(cfg.data), "faces": report["faces"], "combiner": report["combiner"],
                                "seconds": round(report["seconds"]), "phases": phases, "resumed_members": resumed,
                                "training_set_sharpness": report.get("training_set_sharpness", {}),
                                "recipe": {k: v for k, v in asdict(cfg).items() if k not in ("out", "data")}}
    save_detector(ensemble, out)
    (out / "train_report.json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    log(f"saved detector to {out} (combiner {ensemble.config.combiner}, calibration {ensemble.config.calibration}, "
        f"threshold {ensemble.config.threshold}, {report['seconds']:.0f} s)")
    return out


