"""The engines that analyse many files: `--engine local` (local_engine) and `--engine ray` (ray_engine, resumable)."""
