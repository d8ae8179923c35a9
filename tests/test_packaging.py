"""What the wheel carries: every sub-package under the deepfake_detect namespace, and the shipped detector
and default settings as package data (scripts/check_wheel.sh installs the wheel and runs it)."""
from __future__ import annotations

import tomllib
from pathlib import Path

from deepfake_detect.pipeline.core.config import DEFAULT_CONFIG, DEFAULT_WEIGHTS

REPO = Path(__file__).resolve().parents[1]


def test_every_sub_package_is_in_the_wheel() -> None:
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    folders = {"deepfake_detect." + ".".join(init.parent.relative_to(REPO).parts)
               for top in ("pipeline", "stages", "training", "weights", "configs") for init in (REPO / top).rglob("__init__.py")}
    assert folders == listed
    assert {name: REPO / folder for name, folder in setuptools["package-dir"].items()} == {
        f"deepfake_detect.{top}": REPO / top for top in ("pipeline", "stages", "training", "weights", "configs")}


def test_shipped_detector_and_default_settings_are_found_as_package_data() -> None:
    # importlib.resources, not a path relative to the source tree: the same lookup works installed
    assert (DEFAULT_WEIGHTS / "detector.json").is_file() and (DEFAULT_WEIGHTS / "detector.safetensors").is_file()
    assert DEFAULT_CONFIG.name == "default.yaml" and DEFAULT_CONFIG.is_file()
    package_data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert all((DEFAULT_WEIGHTS / name).is_file() for name in package_data["deepfake_detect.weights"])
