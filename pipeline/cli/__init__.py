"""The `deepfake-detect` command line (click): the group, and every command registered in one place.

Each command lives beside its code and imports only `pipeline.cli.common`; heavy libraries (torch,
timm, OpenCV) load inside the commands, so `--help` stays fast.
"""
from __future__ import annotations

import logging

import click

from deepfake_detect.pipeline import __version__
from deepfake_detect.pipeline.bench.run import bench
from deepfake_detect.pipeline.bench.serve import serve_bench
from deepfake_detect.pipeline.cli.analyze import analyze, info, sample
from deepfake_detect.pipeline.cli.detectors import detectors
from deepfake_detect.pipeline.cli.serve import serve
from deepfake_detect.pipeline.cli.training import compare, evaluate, refit, train
from deepfake_detect.pipeline.cli.watch import watch


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="deepfake-detect")
@click.option("--debug", is_flag=True, help="Log internals (with tracebacks) to stderr.")
def main(debug: bool) -> None:
    """Detect face manipulation in videos and photos, and show why."""
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


for _command in (analyze, info, sample, watch, serve, serve_bench, train, refit, evaluate, compare, bench, detectors):
    main.add_command(_command)
