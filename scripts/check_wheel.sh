#!/usr/bin/env bash
# The installed program works: build the wheel, install it into a fresh venv, and from another folder
# show `info` and analyse a sample with the shipped detector. Also: no bare generic top-level modules
# (pipeline, stages, training) were installed. Run by .ci/run; takes a few minutes (the venv installs
# every dependency).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
.venv/bin/python -m pip wheel --quiet --no-deps --no-build-isolation -w "$work/dist" . 2>/dev/null
"$PYTHON" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet "$work"/dist/deepfake_detect-*.whl
cd "$work"
venv/bin/deepfake-detect info | tee info.txt
grep -q "^detector: deepfake-ensemble" info.txt || { echo "check_wheel: the installed program has no detector"; exit 1; }
venv/bin/python -c "
import importlib.util, sys
bare = [n for n in ('pipeline', 'stages', 'training', 'weights', 'configs') if importlib.util.find_spec(n)]
sys.exit(f'check_wheel: bare top-level modules installed: {bare}' if bare else 0)"
venv/bin/deepfake-detect sample sample.mp4 --faces 1 --seconds 2
status=0
venv/bin/deepfake-detect analyze sample.mp4 --no-render --json > report.json || status=$?
[ "$status" -le 3 ] && [ "$status" -ne 2 ] || { echo "check_wheel: analyze failed with exit status $status"; exit 1; }
venv/bin/python -c "
import json
report = json.load(open('report.json'))
assert report['verdict'] in ('real', 'fake', 'inconclusive'), report['verdict']
assert report['model']['version'] and not report['errors'], report
print(f\"check_wheel: ok: {report['model']['name']} {report['model']['version']} verdict {report['verdict']} \"
      f\"score {report['score']:.3f} on a sample analysed from {__import__('os').getcwd()}\")"
# the report page is package data too: the self-contained HTML report must come out of the installed program
venv/bin/deepfake-detect analyze sample.mp4 --out out --html --no-render > /dev/null 2>&1 || true
grep -q 'id="embedded-job"' out/sample.mp4.html || { echo "check_wheel: no HTML report from the installed program"; exit 1; }
echo "check_wheel: ok: HTML report $(wc -c < out/sample.mp4.html) bytes"
