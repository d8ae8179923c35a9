#!/usr/bin/env bash
# The CUDA path, checked on a machine with a GPU (the device tool's H200; no GPU test runs in CI):
# `info` and `analyze` of a photo on cuda with the shipped detector (Grad-CAM and the annotated PNG
# included), its scores against the same analysis on the CPU with PyTorch, and the classifier's
# throughput on each. Needs, beside the repository, the wheels of the packages that machine lacks
# in .whl/ and imageio-ffmpeg's Python files (without its ffmpeg binary: a photo needs none) in
# .whl/pure/; writes into $OUT (or ./gpu-check). Make them here first (.whl/ is ignored via .git/info/exclude;
# the device machine has torch, timm, onnxruntime, OpenCV and scikit-image, Python 3.12):
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl pydantic==2.14.4 pydantic_core==2.50.5 \
#     annotated-types typing-inspection typing_extensions facenet-pytorch==2.5.3 ttach ffmpeg-python future
#   pip wheel --no-deps -w .whl grad-cam==1.5.7 imageio-ffmpeg
#   then unzip imageio_ffmpeg/ from its wheel into .whl/pure/ without binaries/ffmpeg* and delete that wheel
#   (its 68 MB binary would not fit the 64 MiB a call carries with weights/)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-check}
mkdir -p "$OUT" /tmp/ns/deepfake_detect
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
# the repository's folders under their installed names (what pip install . does)
for package in pipeline stages training weights configs; do ln -sfn "$PWD/$package" "/tmp/ns/deepfake_detect/$package"; done
export PYTHONPATH=/tmp/site:$PWD/.whl/pure:/tmp/ns PYTHONUNBUFFERED=1
nvidia-smi -L
python3 -c "import cv2; from skimage import data; cv2.imwrite('/tmp/astronaut.png', cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))"
python3 -m deepfake_detect.pipeline info --device cuda | tee "$OUT/info.txt"
status=0
python3 -m deepfake_detect.pipeline analyze /tmp/astronaut.png --device cuda --out "$OUT/cuda" || status=$?
echo "cuda analyze exit status $status"
python3 -m deepfake_detect.pipeline analyze /tmp/astronaut.png --device cpu --backend torch --no-render --json \
  > "$OUT/cpu.json" || true
python3 - "$OUT" <<'PY'
import json, sys, time
from pathlib import Path

import numpy as np
import torch

from deepfake_detect.pipeline.core.config import DEFAULT_WEIGHTS
from deepfake_detect.stages.classify import CropClassifier
from deepfake_detect.stages.ensemble import load_detector

out = Path(sys.argv[1])
cuda = json.loads((out / "cuda" / "astronaut.png.json").read_text())
cpu = json.loads((out / "cpu.json").read_text())
print("cuda:", cuda["verdict"], cuda["score"], cuda["model"]["device"], "outputs", sorted(cuda["outputs"]))
print("cpu: ", cpu["verdict"], cpu["score"], cpu["model"]["device"])
print("score difference cuda - cpu:", abs(cuda["score"] - cpu["score"]))
print("cuda timings:", cuda["timings"])
crops = np.random.default_rng(0).integers(0, 255, (512, 224, 224, 3), dtype=np.uint8)
for device in ("cuda", "cpu"):
    classifier = CropClassifier(load_detector(DEFAULT_WEIGHTS, torch.device(device)), torch.device(device), 64)
    classifier.score(crops[:64])  # warm-up
    n = 512 if device == "cuda" else 128
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    classifier.score(crops[:n])
    if device == "cuda":
        torch.cuda.synchronize()
    print(f"classifier on {device}: {n / (time.perf_counter() - t0):.0f} crops/s ({torch.get_num_threads()} CPU threads)")
PY
# issue 28: member architectures in fp32/fp16/bf16 and the whole pipeline warm on CUDA (needs the
# efficientnet_pytorch wheel in .whl/ too: pip wheel --no-deps -w .whl efficientnet_pytorch==0.7.1)
python3 scripts/gpu_published.py "$OUT" || echo "gpu_published.py exit status $?"
