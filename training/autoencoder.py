"""A pseudo-fake for faces that come whole out of a generator's decoder (the "AutoGAN" simulator).

Zhang, Karaman and Chang (2019, "Detecting and Simulating Artifacts in GAN Fake Images") showed that
the traces a generator leaves come from its upsampling layers, and that an autoencoder whose decoder
upsamples the way a GAN generator does leaves the same kind of traces (peaks in the spectrum, a
checkerboard at the finest scale). A detector taught "real face -> that autoencoder's reconstruction
of it" learned to catch GANs it had never seen. Talking-head and avatar generators also paint the
whole face through such a decoder, which self-blending does not imitate: their fakes have no
blending boundary.

`UpsamplingAutoencoder` is that simulator, small enough to train on 2 CPU cores: three stride-2
convolutions down, three transposed convolutions up. It is trained here on real face crops only
(L1 reconstruction), then `autoencoder_fakes` turns real crops into pseudo-fakes. Batch-first,
uint8 (N, S, S, 3) crops in and out, S a multiple of 8.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

Log = Callable[[str], None]


def _down(c_in: int, c_out: int, norm: bool) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 4, 2, 1), *([nn.BatchNorm2d(c_out)] if norm else []), nn.LeakyReLU(0.2)]


def _up(c_in: int, c_out: int) -> list[nn.Module]:
    # a transposed convolution with kernel 4, stride 2: the upsampling of DCGAN-style generators,
    # whose uneven overlap is what leaves the checkerboard
    return [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1), nn.BatchNorm2d(c_out), nn.ReLU()]


class UpsamplingAutoencoder(nn.Module):
    """Images (N, 3, S, S) in [0, 1] in, their reconstruction (N, 3, S, S) in [0, 1] out."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.encoder = nn.Sequential(*_down(3, width, False), *_down(width, 2 * width, True), *_down(2 * width, 4 * width, True))
        self.decoder = nn.Sequential(*_up(4 * width, 2 * width), *_up(2 * width, width),
                                     nn.ConvTranspose2d(width, 3, 4, 2, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 8 or x.shape[-2] % 8:
            raise ValueError(f"image sides must be multiples of 8, got {tuple(x.shape[-2:])}")
        return self.decoder(self.encoder(x))


def _to_tensor(crops: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float() / 255


def train_autoencoder(crops: np.ndarray, steps: int, seed: int, batch: int = 16, lr: float = 2e-3, width: int = 32,
                      log: Log = print) -> tuple[UpsamplingAutoencoder, list[float]]:
    """An autoencoder trained for `steps` batches of real face crops (uint8 (N, S, S, 3)), L1 loss,
    cosine learning rate; returns it (in eval mode) with the loss of each step."""
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = UpsamplingAutoencoder(width)
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.5, 0.999))
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / max(steps, 1))))
    losses, t0 = [], time.time()
    model.train()
    for step in range(1, steps + 1):
        x = _to_tensor(crops[torch.randint(len(crops), (batch,), generator=generator).numpy()])
        loss = (model(x) - x).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
        losses.append(loss.item())
        if step % 100 == 0 or step == steps:
            log(f"autoencoder: step {step}/{steps} L1 {np.mean(losses[-100:]):.4f} ({time.time() - t0:.0f} s)")
    return model.eval(), losses


@torch.no_grad()
def autoencoder_fakes(model: UpsamplingAutoencoder, crops: np.ndarray, batch: int = 32) -> np.ndarray:
    """Pseudo-fakes: each real crop (uint8 (N, S, S, 3)) passed through the autoencoder, uint8, same shape."""
    model.eval()
    out = [(model(_to_tensor(crops[i:i + batch])) * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
           for i in range(0, len(crops), batch)]
    return torch.cat(out).numpy() if out else np.zeros_like(crops)
