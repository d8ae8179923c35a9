#!/usr/bin/env bash
# Set up, make a sample clip with a moving face (no download), analyse it, and show the outputs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
mkdir -p out/demo
.venv/bin/deepfake-detect sample out/demo/sample.mp4 --seconds 6 --faces 2
status=0
.venv/bin/deepfake-detect analyze out/demo/sample.mp4 --out out/demo --html || status=$?
echo
echo "exit status $status (0 real, 1 fake, 2 failed, 3 inconclusive / no face)"
echo "report:          out/demo/sample.mp4.json"
echo "annotated video: out/demo/sample.mp4.annotated.mp4"
echo "keyframes:       out/demo/sample.mp4.keyframes/"
echo "HTML report:     out/demo/sample.mp4.html (one file, opens offline in any browser)"
[ "$status" -le 3 ] && [ "$status" -ne 2 ]
