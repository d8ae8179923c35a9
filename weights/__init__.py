"""The shipped detector (detector.json, detector.safetensors) and its model card: package data, no code."""
