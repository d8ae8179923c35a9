"""GPU figures for issue 28, run by scripts/gpu_check.sh on a machine with CUDA (none in CI):

1. each member architecture (ours and the importable published ones, random weights) in fp32, fp16
   and bf16 autocast: crops/s and the largest probability difference from fp32;
2. the whole pipeline warm on CUDA: a 30-s 1280x720 clip (written with OpenCV, which needs no
   ffmpeg binary) analysed at 32 frames, repeated; seconds per video and videos per hour, and the
   largest face-score difference of fp16 autocast (the CUDA default) from fp32.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from deepfake_detect.pipeline.bench.architectures import _configs
from deepfake_detect.stages.classify import detector_input
from deepfake_detect.stages.ensemble import create_detector

out = Path(sys.argv[1] if len(sys.argv) > 1 else "gpu-check")
out.mkdir(parents=True, exist_ok=True)
device = torch.device(os.environ.get("DEVICE", "cuda"))   # DEVICE=cpu: a dry run of this script
N = int(os.environ.get("CROPS", "256"))
REPEATS = int(os.environ.get("REPEATS", "5"))
results: dict = {"gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else "none (dry run)",
                 "architectures": [], "pipeline": {}}


def sync() -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
rng = np.random.default_rng(0)


def timed(fn, n: int) -> tuple[float, torch.Tensor]:  # noqa: ANN001 - a closure
    fn()   # warm-up (cuDNN autotuning, allocations)
    sync()
    t0 = time.perf_counter()
    result = fn()
    sync()
    return n / (time.perf_counter() - t0), result


def measure(label: str, config) -> dict:  # noqa: ANN001 - a DetectorConfig
    model = create_detector(config).to(device).eval()
    n = N
    crops = rng.integers(0, 256, (n, config.input_size, config.input_size, 3), dtype=np.uint8)
    x = detector_input(crops, config, device)
    row: dict = {"architecture": label, "input": config.input_size}
    reference = None
    for precision in ("fp32", "fp16", "bf16"):
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)

        def run(dtype: torch.dtype | None = dtype) -> torch.Tensor:
            with torch.inference_mode(), torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                return torch.cat([model(x[i:i + 64])[0].float() for i in range(0, n, 64)])

        rate, probs = timed(run, n)
        row[f"{precision}_crops_per_s"] = rate
        if reference is None:
            reference = probs
        else:
            row[f"{precision}_max_prob_diff"] = float((probs - reference).abs().max())
    return row


for label, config in _configs():
    row = measure(label, config)
    results["architectures"].append(row)
    print(json.dumps(row))
    if device.type == "cuda":
        torch.cuda.empty_cache()

# the whole pipeline on CUDA, warm
from deepfake_detect.pipeline.core.config import load_config  # noqa: E402
from deepfake_detect.pipeline.core.runner import Analyzer  # noqa: E402
from deepfake_detect.pipeline.core.samples import make_sample_photo  # noqa: E402

clip = out / "clip720.avi"
face = cv2.imread(str(make_sample_photo(out / "face.jpg", (1280, 720))))
writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (1280, 720))
for i in range(int(os.environ.get('CLIP_FRAMES', '750'))):
    writer.write(np.roll(face, 2 * i % 200, axis=1))
writer.release()
reports = {}
for precision in ("fp16", "fp32"):
    config = load_config(None, {"device": device.type, "backend": "torch", "sampling.mode": "count", "sampling.value": 32,
                                "render.enabled": "off"})
    analyzer = Analyzer(config)
    analyzer.classifier.half = precision == "fp16"   # the CUDA default is fp16 autocast
    analyzer.analyze(clip)   # warm-up
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        reports[precision] = analyzer.analyze(clip)
        times.append(time.perf_counter() - t0)
    results["pipeline"][precision] = {"seconds_per_video": min(times), "videos_per_hour": 3600 / min(times),
                                      "all_s": times}
    print(precision, results["pipeline"][precision])
faces = {p: [f.score for t in r.tracks for f in t.faces] for p, r in reports.items()}
if faces["fp16"] and len(faces["fp16"]) == len(faces["fp32"]):
    results["pipeline"]["max_face_score_diff_fp16_fp32"] = float(np.abs(np.subtract(faces["fp16"], faces["fp32"])).max())
(out / "published.json").write_text(json.dumps(results, indent=1))
print(json.dumps(results["pipeline"]))
