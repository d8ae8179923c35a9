"""Output writers that run after the verdict (keyframe images, annotated video)."""
from __future__ import annotations

from pipeline.config import RenderSettings


def build_output_writers(settings: RenderSettings, n_inputs: int) -> list:
    return []
