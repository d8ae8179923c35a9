"""`deepfake-detect serve`: the REST API, its jobs, uploads and web page."""
