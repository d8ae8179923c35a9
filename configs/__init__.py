"""Default analysis settings (default.yaml) and training recipes: package data, no code."""
