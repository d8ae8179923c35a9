"""What a training run keeps on disk so that a re-run or an interrupted run picks up where it was:
the fixed, augmented training set and every finished member (both in the cache folder, shared by runs)."""
from __future__ import annotations

import functools
import hashlib
import inspect
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from deepfake_detect.training.autoencoder import UpsamplingAutoencoder, train_autoencoder
from deepfake_detect.training.cached import build_sbi_set
from deepfake_detect.training.recipe import Log, TrainConfig, split_seed
from deepfake_detect.training.sbi_batches import FacePool, face_crop

AE_TRAIN_CROPS = 4000   # real crops the autoencoder learns from (drawn identity-balanced)
AE_TRAIN_SIZE = 112     # ...at this size: 4x cheaper than 224 on the CPU; being convolutional, it is applied at any size
SET_SEED_STRIDE = 7919  # a prime far from the small seed offsets (+1..+4) the run's other draws use


@functools.cache  # the source does not change while a run lasts: read it once, not once per set
def augmentation_digest() -> str:
    """What the cached training sets were made with, derived from the code that makes them: the
    augmentations, the self-blends and their masks, the crop geometry. Any change there makes new
    sets instead of reusing stale ones (a hand-kept version number was forgotten once)."""
    from deepfake_detect.stages import crop
    from deepfake_detect.training import augment, face_hulls, sbi_batches, self_blend

    source = "".join(inspect.getsource(module) for module in (augment, self_blend, face_hulls, sbi_batches, crop))
    return hashlib.sha1(source.encode()).hexdigest()[:16]


def pool_digest(pool: FacePool | None) -> str:
    return pool.digest if pool else hashlib.sha1().hexdigest()  # None: the digest of nothing


def cached_autoencoder(pool: FacePool, cfg: TrainConfig, cache_dir: Path, log: Log) -> UpsamplingAutoencoder:
    """The recipe's upsampling autoencoder, trained on the training reals once and kept in the cache
    folder (keyed by the faces, the crop geometry, its steps and the seed)."""
    key = hashlib.sha1(json.dumps([pool_digest(pool), AE_TRAIN_SIZE, cfg.crop_margin, cfg.ae_steps, cfg.seed]).encode())
    path = Path(cache_dir) / "members" / f"autoencoder-{key.hexdigest()[:16]}.safetensors"
    model = UpsamplingAutoencoder()
    if path.is_file():
        try:
            model.load_state_dict(load_file(str(path)))
            log(f"autoencoder: resumed from {path}")
            return model.eval()
        except Exception:  # damaged by an interruption: train again
            path.unlink(missing_ok=True)
    rng = np.random.default_rng(cfg.seed + 5)
    crops = np.stack([face_crop(*pool.draw(rng), cfg.crop_margin, AE_TRAIN_SIZE) for _ in range(AE_TRAIN_CROPS)])
    model, _ = train_autoencoder(crops, cfg.ae_steps, cfg.seed, log=log)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(partial))
    partial.replace(path)
    return model


def cached_sbi_set(pool: FacePool, cfg: TrainConfig, cache_dir: Path,
                   fake_pool: FacePool | None = None, index: int = 0,
                   autoencoder: UpsamplingAutoencoder | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The `index`-th fixed, augmented training set (real / self-blended / real-fake crops; each index
    draws other faces and other pseudo-fakes), stored as safetensors so that a re-run or a resumed run
    with the same data and recipe skips building it."""
    n_fakes = cfg.real_fakes if fake_pool is not None else 0
    # real_match joins the key only where it changes the set: entries made before it existed stay valid
    matched = [cfg.real_match] if cfg.real_match != "random" and n_fakes else []
    key = hashlib.sha1(json.dumps([pool_digest(pool), pool_digest(fake_pool), cfg.train_pairs, n_fakes, cfg.seed,
                                   cfg.input_size, cfg.crop_margin, cfg.zoom_min_area, augmentation_digest(), *matched,
                                   *([index] if index else []),
                                   *([cfg.ae_pairs, cfg.ae_steps] if autoencoder is not None and cfg.ae_pairs else [])]
                                  ).encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"sbi-{key}.safetensors"
    if path.is_file():
        try:
            data = load_file(str(path))
            return data["images"], data["labels"]
        except Exception:  # a damaged entry (interrupted write) is rebuilt
            path.unlink(missing_ok=True)
    seed = cfg.seed + 2 + SET_SEED_STRIDE * index  # index 0: the seed of the single set, before sbi_sets existed
    rng = np.random.default_rng(seed)
    with torch.random.fork_rng():  # the set depends only on its key; the global RNG is left as it was
        torch.manual_seed(seed)
        images, labels = build_sbi_set(pool, cfg.train_pairs, rng, cfg.crop_margin, cfg.input_size, augment=True,
                                       fake_pool=fake_pool, n_fakes=n_fakes, zoom_min_area=cfg.zoom_min_area,
                                       real_match=cfg.real_match, autoencoder=autoencoder, n_ae=cfg.ae_pairs)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    save_file({"images": images.contiguous(), "labels": labels}, str(partial))
    partial.replace(path)
    return images, labels


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
        distill = ("distill_steps", "distill_teacher", "distill_target", "distill_teacher_arch")
        # detail_size is applied after the members are trained (holdout fits, analysis), so it is theirs
        # only with train_detail; both stay out of the key otherwise, so finished members stay valid
        run_wide = {k: v for k, v in asdict(self.cfg).items()
                    if k not in ("out", "version", "threads", "members", "replicas", "detail_size", "train_detail",
                                 *distill)}
        if self.cfg.train_detail:
            run_wide["member_detail"] = self.cfg.detail_size
        # settings at their defaults key as before they existed: finished members stay valid
        for setting, default in (("real_match", "random"), ("sbi_sets", 1), ("sbi_landmarks", 5), ("ae_pairs", 0),
                                 ("ae_steps", 1500), ("real_balance", "identity")):
            if run_wide[setting] == default:
                del run_wide[setting]
        # the split as it is used: a replica of a seed ensemble is keyed as the one-seed run it equals
        run_wide["split_seed"] = split_seed(self.cfg)
        names = list(self.cfg.members)
        earlier = {}
        for n in names[:names.index(name) + 1]:
            recipe = self.cfg.members[n]
            inits = recipe.init if isinstance(recipe.init, list) else [recipe.init]
            settings = {k: getattr(self.cfg, k) for k in distill}
            if settings["distill_teacher_arch"] == "tf_efficientnet_lite0":   # the default keys as before it existed
                del settings["distill_teacher_arch"]
            earlier[n] = {**asdict(recipe), **(settings if "distill" in inits else {})}
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
        weights, meta = self._paths(name)
        self.folder.mkdir(parents=True, exist_ok=True)
        partial = Path(str(weights) + ".partial")
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(partial))
        partial.replace(weights)
        meta.write_text(json.dumps(result, default=float))  # written last: its presence marks the entry whole


