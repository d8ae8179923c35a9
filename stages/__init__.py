"""Pipeline stages: decode, detect, track, classify (ensemble), face quality, aggregate, explain, render.

Each module does one job behind a small batch-in, batch-out interface and knows nothing of the
CLI or configuration files; `pipeline/` builds their settings and wires them together.
"""

# cv2 must be loaded before decord: decord bundles an old zlib that, loaded first, breaks
# cv2's PNG decoding for the whole process ("libpng error: bad parameters to zlib").
import cv2 as _cv2  # noqa: E402,F401
