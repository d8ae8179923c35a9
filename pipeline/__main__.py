"""`python -m deepfake_detect.pipeline` runs the CLI (same as the `deepfake-detect` script)."""
from deepfake_detect.pipeline.cli import main

main()
