"""`deepfake-detect bench` and `serve-bench`: speed and memory measured on real work."""
