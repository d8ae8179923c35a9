"""`python -m pipeline` runs the CLI (same as the `deepfake-detect` script)."""
from pipeline.cli import main

main()
