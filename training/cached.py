"""CPU training on cached features: freeze a member's early blocks, train the rest for epochs.

On 2 CPU cores a full MobileNetV2 step runs at ~11 img/s at best, too slow for a useful number of
self-blended examples. The early blocks hold most of the FLOPs (high resolution) and change least
in fine-tuning, so we run them once over a fixed, pre-augmented set of real/pseudo-fake crops,
keep their output (fp16), and train only the later blocks and the head on it, epoch after epoch.
Works for timm's EfficientNet-family models (MobileNetV2, EfficientNetV2, EfficientNet-Lite).
"""
from __future__ import annotations

import copy
import functools
import math
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from deepfake_detect.stages.classify import shrink_detail
from deepfake_detect.stages.face_quality import sharpness
from deepfake_detect.training.augment import DEFAULT_ZOOM_MIN_AREA, build_train_transform
from deepfake_detect.training.autoencoder import UpsamplingAutoencoder, autoencoder_fakes
from deepfake_detect.training.metrics import binary_metrics
from deepfake_detect.training.sbi_batches import FacePool, face_crop, normalise, sbi_pair_crops

if TYPE_CHECKING:
    from timm.models.efficientnet import EfficientNet

Log = Callable[[str], None]
Schedule = Literal["cosine", "step"]
RealMatch = Literal["random", "quality"]  # how the real crop beside each real-fake crop is drawn (build_sbi_set)
RealBalance = Literal["identity", "source"]  # what real draws are balanced over (training.train.face_pools)


def schedule_factor(schedule: Schedule, step: int, total: int) -> float:
    """The multiplier of the base learning rate at optimiser step `step` (0-based) of `total`.

    cosine: 0.5 * (1 + cos(pi * step / total)); step: x0.1 from 1/2 and x0.01 from 3/4 of the run.
    These are, operation for operation, the formulas the shipped detectors were trained with: a
    detector must be reproducible from configs/train.yaml, so any change here (even a reordering
    that only moves the last bit) changes its weights. tests/test_lr_schedule.py holds them fixed.
    """
    if schedule == "step":
        return 0.1 ** (int(step >= total / 2) + int(step >= 3 * total / 4))
    return 0.5 * (1 + math.cos(math.pi * step / max(total, 1)))  # max: an empty run (total 0) builds no 0/0


def lr_schedule(opt: torch.optim.Optimizer, schedule: Schedule, total: int) -> LambdaLR:
    """The learning-rate schedule of a run of `total` optimiser steps; call its `step()` once after
    each `opt.step()`. LambdaLR sets lr = base lr * schedule_factor(...), the same product as before."""
    return LambdaLR(opt, functools.partial(schedule_factor, schedule, total=total))


# Real crops drawn per real-fake crop when matching quality: enough that one lies close in sharpness,
# few enough that the identity balance of the draws is kept.
QUALITY_CANDIDATES = 16


def quality_matched_real(pool: FacePool, fake: np.ndarray, rng: np.random.Generator, margin: float,
                         size: int) -> np.ndarray:
    """Of QUALITY_CANDIDATES real crops (identity-balanced draws), the one closest to `fake` in log
    sharpness. The real fakes of the training data (small, compressed FF++ and DFDC faces) are blurrier
    than the reals drawn at random beside them (as built, median Laplacian variance ~60 against ~80;
    sharpness alone tells them apart at AUC 0.45), a "blurred = fake" cue that inverts on sets whose
    fakes are sharp demo clips. Matching removes that gap from the set (AUC 0.49-0.50), though over
    three seeds it did not make the detectors lean less on quality (MODEL_CARD.md)."""
    candidates = [face_crop(*pool.draw(rng), margin, size) for _ in range(QUALITY_CANDIDATES)]
    gap = np.abs(np.log1p(sharpness(np.stack(candidates))) - np.log1p(sharpness(fake[None]))[0])
    return candidates[int(np.argmin(gap))]


def build_sbi_set(pool: FacePool, n_pairs: int, rng: np.random.Generator, margin: float, size: int,
                  augment: bool, fake_pool: FacePool | None = None, n_fakes: int = 0,
                  zoom_min_area: float = DEFAULT_ZOOM_MIN_AREA,
                  real_match: RealMatch = "random", autoencoder: UpsamplingAutoencoder | None = None,
                  n_ae: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 images (N, 3, S, S), float labels): each real crop beside its self-blended fake, then
    `n_fakes` crops of real fakes (family-balanced) each matched by one more real crop, so the two
    classes stay equal in number; with `real_match="quality"` that real crop is as sharp as the fake
    (a self-blend already is as sharp as its real), so no label is told by sharpness alone. With an
    `autoencoder`, `n_ae` more real crops follow, each beside its reconstruction (a pseudo-fake of a
    face painted whole by a generator's decoder)."""
    transform = build_train_transform(size, zoom_min_area) if augment else None
    images, labels = [], []

    def add(crop: np.ndarray, label: int) -> None:
        if transform is not None:
            images.append((transform(crop) * 255).round().to(torch.uint8))
        else:
            images.append(torch.from_numpy(crop).permute(2, 0, 1).contiguous())
        labels.append(float(label))

    for _ in range(n_pairs):
        for label, crop in enumerate(sbi_pair_crops(*pool.draw(rng), rng, margin, size)):
            add(crop, label)
    if fake_pool is not None:
        for _ in range(n_fakes):
            fake = face_crop(*fake_pool.draw(rng), margin, size)
            add(fake, 1)
            add(quality_matched_real(pool, fake, rng, margin, size) if real_match == "quality"
                else face_crop(*pool.draw(rng), margin, size), 0)
    if autoencoder is not None and n_ae:
        reals = np.stack([face_crop(*pool.draw(rng), margin, size) for _ in range(n_ae)])
        for real, fake in zip(reals, autoencoder_fakes(autoencoder, reals)):
            add(real, 0)
            add(fake, 1)
    return torch.stack(images), torch.tensor(labels)


class LateBlocks(nn.Module):
    """The trainable part of an EfficientNet-family member: blocks[k:], conv_head, bn2 and the head."""

    def __init__(self, member: EfficientNet, frozen_blocks: int):
        super().__init__()
        self.member, self.k = member, frozen_blocks

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        m = self.member
        x = m.blocks[self.k:](feats.float())
        return m.forward_head(m.bn2(m.conv_head(x))).squeeze(1)

    def trainable(self) -> list[nn.Parameter]:
        m = self.member
        modules = [m.blocks[self.k:], m.conv_head, m.bn2, m.get_classifier()]
        return [p for mod in modules for p in mod.parameters()]


@torch.no_grad()
def early_features(member: EfficientNet, images: torch.Tensor, frozen_blocks: int, mean, std, batch: int = 64,
                   detail_size: int | None = None) -> torch.Tensor:
    """Output of conv_stem, bn1 and blocks[:k] for uint8 images (with `detail_size`, shrunk and regrown
    first, as analysis will show them), stored as fp16."""
    member.eval()
    out = []
    for i in range(0, len(images), batch):
        x = normalise(shrink_detail(images[i:i + batch].float() / 255, detail_size), mean, std)
        x = member.blocks[:frozen_blocks](member.bn1(member.conv_stem(x)))
        out.append(x.half())
    return torch.cat(out)


@torch.no_grad()
def _scores(late: LateBlocks, feats: torch.Tensor, batch: int = 128) -> np.ndarray:
    late.eval()
    return torch.cat([late(feats[i:i + batch]) for i in range(0, len(feats), batch)]).sigmoid().numpy()


def train_late_blocks(late: LateBlocks, train: Sequence[tuple[torch.Tensor, torch.Tensor]],
                      val: tuple[torch.Tensor, np.ndarray], epochs: int, lr: float, schedule: Schedule, head_only: bool,
                      seed: int, log: Log, name: str, batch: int = 32, patience: int = 3, freeze_bn: bool = False,
                      soft_targets: Sequence[torch.Tensor] | None = None, soft_weight: float = 0.0) -> dict:
    """Epochs over cached features with early stopping on validation AUC; best weights restored.

    `train` holds one or more sets of (features, labels) of equal size; epoch e trains on set
    (e - 1) mod len(train), so several sets give fresh pseudo-fakes epoch after epoch.

    `freeze_bn` keeps BatchNorm statistics fixed (affine weights still learn): needed for
    pretrained members, whose statistics a 32-image batch of faces would overwrite, and essential
    for the MobileNetV2 initialisation, whose BN is folded into the convolutions.
    """
    params = [p for p in late.member.get_classifier().parameters()] if head_only else late.trainable()
    for p in late.parameters():
        p.requires_grad = False
    for p in params:
        p.requires_grad = True
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4 if head_only else 1e-2)
    loss_fn = nn.BCEWithLogitsLoss()
    scheduler = lr_schedule(opt, schedule, epochs * math.ceil(len(train[0][0]) / batch))  # one step per batch
    gen = torch.Generator().manual_seed(seed)
    auc = binary_metrics(val[1], _scores(late, val[0]), 0.5)["roc_auc"]
    best = {"auc": auc, "epoch": 0, "state": copy.deepcopy(late.state_dict())}
    history, stale, t0 = [{"epoch": 0, "val_auc": auc}], 0, time.time()
    log(f"{name}: start val AUC {auc:.3f}")
    for epoch in range(1, epochs + 1):
        late.train()
        if head_only or freeze_bn:
            for m in late.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        which = (epoch - 1) % len(train)
        feats, labels = train[which]
        soft = soft_targets[which] if soft_targets is not None and soft_weight else None
        order = torch.randperm(len(feats), generator=gen)
        losses = []
        for i in range(0, len(order), batch):
            idx = order[i:i + batch]
            out = late(feats[idx])
            loss = loss_fn(out, labels[idx])
            if soft is not None:
                loss = (1 - soft_weight) * loss + soft_weight * loss_fn(out, soft[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            scheduler.step()
            losses.append(loss.item())
        auc = binary_metrics(val[1], _scores(late, val[0]), 0.5)["roc_auc"]
        history.append({"epoch": epoch, "loss": float(np.mean(losses)), "val_auc": auc, "seconds": time.time() - t0})
        log(f"{name}: epoch {epoch}/{epochs} loss {np.mean(losses):.4f} val AUC {auc:.3f} ({time.time() - t0:.0f} s)")
        if auc > best["auc"]:
            best, stale = {"auc": auc, "epoch": epoch, "state": copy.deepcopy(late.state_dict())}, 0
        else:
            stale += 1
            if stale >= patience:
                log(f"{name}: early stop (best AUC {best['auc']:.3f} at epoch {best['epoch']})")
                break
    late.load_state_dict(best["state"])
    return {"history": history, "best_auc": best["auc"], "best_epoch": best["epoch"], "seconds": time.time() - t0}
