"""`deepfake-detect watch`: the watch-folder daemon (discovery, workers, status)."""
