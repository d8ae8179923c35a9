"""Training utilities: self-blended pseudo-fakes, augmentation and evaluation metrics."""
