"""The bench's architectures row (`bench --architectures`): face crops per second of every member this
pipeline can run, its own and the published ones it imports (training/published), each at its own
input size, on the analysis's compute threads, in PyTorch and in ONNX Runtime.

Random weights: speed does not depend on the weights' values, and no published checkpoint is
needed. Each network scores the same random crops on both backends; the largest difference of their
probabilities is reported beside the speeds (the no-loss check of the export).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from deepfake_detect.stages.ensemble import DetectorConfig

CROPS = 16       # crops timed per backend, after one warm-up batch
BATCH = 16


def _configs() -> list[tuple[str, DetectorConfig]]:
    from deepfake_detect.stages.ensemble import DetectorConfig
    from deepfake_detect.training.published import dfdc_winner, icpr2020, resnext_lstm, sbi

    ours = [(f"this project: {name}", DetectorConfig(members=[name], trained=True))
            for name in ("mobilenetv2_100", "tf_efficientnetv2_b0")]
    return [*ours,
            ("icpr2020: EfficientNetAutoAttB4", icpr2020.example_config()),
            ("sbi: EfficientNet-B4", sbi.example_config()),
            ("dfdc-winner: EfficientNet-B7 (one of seven)", dfdc_winner.example_config()),
            ("resnext-lstm: ResNeXt50 + LSTM", resnext_lstm.example_config())]


def _rate(score: Callable[[np.ndarray], Any], crops: np.ndarray) -> tuple[float, Any]:
    score(crops[:2])   # warm-up: first-call allocations
    t0 = time.perf_counter()
    result = score(crops)
    return len(crops) / (time.perf_counter() - t0), result


def architectures_bench(threads: int, say: Callable[[str], None], crops: int = CROPS,
                        only: tuple[str, ...] = ()) -> dict[str, Any]:
    """Crops/s of each architecture on `threads` threads with PyTorch and ONNX Runtime (`only`: those
    whose label starts with one of these)."""
    import torch

    from deepfake_detect.stages.classify import CropClassifier, OnnxCropClassifier
    from deepfake_detect.stages.ensemble import create_detector
    from deepfake_detect.stages.onnx_models import export_detector, make_session

    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    rows = []
    for label, config in _configs():
        if only and not label.startswith(only):
            continue
        model = create_detector(config).eval()
        size = config.input_size
        batch = rng.integers(0, 256, (crops, size, size, 3), dtype=np.uint8)
        torch_rate, torch_scores = _rate(CropClassifier(model, torch.device("cpu"), BATCH).score, batch)
        onnx_bytes = export_detector(model, size)
        session = make_session(onnx_bytes, threads)
        onnx_rate, onnx_scores = _rate(OnnxCropClassifier(session, config, BATCH).score, batch)
        row = {"architecture": label, "input": size, "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
               "onnx_mib": len(onnx_bytes) / 2**20, "torch_crops_per_s": torch_rate, "onnx_crops_per_s": onnx_rate,
               "max_prob_diff": float(np.abs(torch_scores.ensemble - onnx_scores.ensemble).max())}
        rows.append(row)
        say(f"architectures: {label}: {torch_rate:.1f} crops/s PyTorch, {onnx_rate:.1f} ONNX Runtime")
        del model, session
    return {"threads": threads, "crops": crops, "rows": rows}
