"""A start for a member that has no ImageNet weights offline (EfficientNetV2-B0): distilled from
EfficientNet-Lite0's ImageNet logits, and optionally its feature maps, on unlabelled face crops."""
from __future__ import annotations

import time

import numpy as np
import timm
import torch
from safetensors.torch import load_file
from timm.models.efficientnet import EfficientNet
from torch import nn

from deepfake_detect.training.augment import build_train_transform
from deepfake_detect.training.cached import lr_schedule
from deepfake_detect.training.recipe import MEAN, STD, Log, TrainConfig
from deepfake_detect.training.sbi_batches import FacePool, normalise


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
    """Teach `student_arch` to reproduce the teacher's ImageNet logits (`cfg.distill_teacher_arch`,
    EfficientNet-Lite0 by default; and, with `distill_target: features`, its feature maps at every
    stage) on face frames of every training item, real or fake (no labels needed): ImageNet-like
    features where no ImageNet weights exist."""
    teacher = timm.create_model(cfg.distill_teacher_arch, num_classes=1000)
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


