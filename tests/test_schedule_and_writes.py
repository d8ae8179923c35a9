"""Learning-rate schedules (bit for bit what detectors were trained with) and durable report writes."""
from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch

from deepfake_detect.pipeline.core import writers
from deepfake_detect.training.cached import Schedule, lr_schedule


def _train_py_formula(lr: float, schedule: Schedule, steps: int, step: int) -> float:
    """training/train.py's `_lr_at` as it was before LambdaLR (mode "full" and distillation)."""
    if schedule == "step":
        return lr * (0.1 ** (int(step >= steps / 2) + int(step >= 3 * steps / 4)))
    return lr * 0.5 * (1 + math.cos(math.pi * step / max(steps, 1)))


def _cached_py_formula(lr: float, schedule: Schedule, total: int, step: int) -> float:
    """training/cached.py's per-step factor as it was before LambdaLR (mode "cached")."""
    factor = 0.5 * (1 + math.cos(math.pi * step / total)) if schedule == "cosine" else \
        0.1 ** (int(step >= total / 2) + int(step >= 3 * total / 4))
    return lr * factor


def _rates(lr: float, schedule: Schedule, total: int) -> list[float]:
    """The learning rate each optimiser step runs with, stepping the scheduler as training does."""
    param = torch.nn.Parameter(torch.zeros(3))
    opt = torch.optim.AdamW([param], lr=lr, weight_decay=1e-2)
    scheduler = lr_schedule(opt, schedule, total)
    seen = []
    for _ in range(total):
        seen.append(opt.param_groups[0]["lr"])
        param.grad = torch.ones(3)
        opt.step()
        scheduler.step()
    return seen


@pytest.mark.parametrize("schedule", ["cosine", "step"])
@pytest.mark.parametrize("total", [1, 2, 3, 7, 8, 47, 100, 400, 1001])
@pytest.mark.parametrize("lr", [1e-3, 3e-4, 3e-3, 2e-4, 0.1, 1 / 3])
def test_scheduler_gives_exactly_the_old_learning_rates(lr: float, schedule: Schedule, total: int) -> None:
    seen = _rates(lr, schedule, total)
    # == on floats on purpose: a detector is reproduced from its recipe only if every rate is the same bits
    assert seen == [_train_py_formula(lr, schedule, total, s) for s in range(total)]
    assert seen == [_cached_py_formula(lr, schedule, total, s) for s in range(total)]
    assert all(type(r) is float for r in seen)


def test_empty_run_builds_a_schedule() -> None:
    # an epochs: 0 phase makes a scheduler for 0 steps; building it must not divide by zero
    assert _rates(1e-3, "cosine", 0) == [] and _rates(1e-3, "step", 0) == []


def test_atomic_write_syncs_the_data_before_the_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync-dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "fsync-file")
        real_fsync(fd)

    def replace(src: str, dst: Path) -> None:
        events.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr(writers.os, "fsync", fsync)
    monkeypatch.setattr(writers.os, "replace", replace)
    target = tmp_path / "out" / "r.json"
    writers.atomic_write_text(target, "{}\n")
    assert target.read_text() == "{}\n"
    assert events[:2] == ["fsync-file", "replace"]
    if hasattr(os, "O_DIRECTORY") and os.path.isdir("/proc/self/fd"):
        assert events[2:] == ["fsync-dir"]  # the rename itself made durable
    assert [p.name for p in target.parent.iterdir()] == ["r.json"]  # no temporary file left


def test_atomic_write_leaves_the_old_file_when_the_write_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "r.json"
    target.write_text("old\n")

    def failing_fsync(fd: int) -> None:
        raise OSError(5, "I/O error")

    monkeypatch.setattr(writers.os, "fsync", failing_fsync)
    with pytest.raises(OSError):
        writers.atomic_write_text(target, "new\n")
    assert target.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_atomic_write_makes_an_ordinary_file(tmp_path):
    import stat

    from deepfake_detect.pipeline.core.writers import atomic_write_text

    atomic_write_text(tmp_path / "r.json", "{}")
    (tmp_path / "plain.json").write_text("{}")  # what open() makes under this process's umask
    mode = stat.S_IMODE((tmp_path / "r.json").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain.json").stat().st_mode) and mode != 0o600  # not mkstemp's 0600
