"""Pipeline stages: decode, detect, track, classify (ensemble), aggregate, explain, render.

Each module does one job behind a small batch-in, batch-out interface and knows nothing of the
CLI or configuration files; `pipeline/` builds their settings and wires them together.
"""
