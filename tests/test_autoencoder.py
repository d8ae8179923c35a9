"""The upsampling autoencoder pseudo-fake (training/autoencoder.py) on the astronaut face."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from deepfake_detect.stages.crop import crop_face
from deepfake_detect.training.autoencoder import UpsamplingAutoencoder, autoencoder_fakes, train_autoencoder


@pytest.fixture(scope="module")
def crops(astronaut_face) -> np.ndarray:
    rng = np.random.default_rng(0)
    shifted = [astronaut_face.box + rng.uniform(-6, 6, 4).astype(np.float32) for _ in range(8)]
    return np.stack([crop_face(astronaut_face.image, box, 0.3, 64) for box in shifted])


@pytest.fixture(scope="module")
def trained(crops):
    return train_autoencoder(crops, steps=120, seed=0, batch=8, width=8, log=lambda _: None)


def test_fakes_keep_shape_and_range_and_come_near_the_real_face(crops, trained) -> None:
    model, losses = trained
    fakes = autoencoder_fakes(model, crops)
    assert fakes.shape == crops.shape and fakes.dtype == np.uint8
    assert np.mean(losses[-20:]) < 0.6 * np.mean(losses[:20])  # it learned to reconstruct
    error = np.abs(fakes.astype(int) - crops.astype(int)).mean()
    assert 0 < error < 40  # close to the face, never the face itself


def test_seed_reproduces_the_autoencoder(crops, trained) -> None:
    again, _ = train_autoencoder(crops, steps=120, seed=0, batch=8, width=8, log=lambda _: None)
    other, _ = train_autoencoder(crops, steps=120, seed=1, batch=8, width=8, log=lambda _: None)
    np.testing.assert_array_equal(autoencoder_fakes(trained[0], crops), autoencoder_fakes(again, crops))
    assert not np.array_equal(autoencoder_fakes(trained[0], crops), autoencoder_fakes(other, crops))


def test_decoder_upsamples_with_transposed_convolutions_and_refuses_odd_sizes() -> None:
    model = UpsamplingAutoencoder(width=4)
    assert sum(isinstance(m, torch.nn.ConvTranspose2d) for m in model.decoder) == 3
    assert model(torch.zeros(1, 3, 48, 40)).shape == (1, 3, 48, 40)
    with pytest.raises(ValueError, match="multiples of 8"):
        model(torch.zeros(1, 3, 50, 48))
