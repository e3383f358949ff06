"""A small convolutional variational autoencoder, trained on a pool of images for embeddings.

Used by cue discovery when no CLIP backend is available: images are resized to a small
square, encoded to a low-dimensional latent mean, and the means are clustered.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from auditor.errors import InvalidInputError

logger = logging.getLogger(__name__)


class SmallVAE(nn.Module):
    """Conv encoder (3 stride-2 blocks) to a Gaussian latent; transposed-conv decoder.

    Args:
        latent_dim: size of the latent code.
        size: side of the (square) images it takes; a multiple of 8.
        width: channels of the first block (then 2x, 4x).
    """

    def __init__(self, latent_dim: int = 8, size: int = 32, width: int = 16):
        super().__init__()
        if size % 8 != 0:
            raise InvalidInputError(f"SmallVAE size must be a multiple of 8; got {size}")
        self.size = size
        self.latent_dim = latent_dim
        side = size // 8
        self.encoder = nn.Sequential(
            nn.Conv2d(3, width, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(2 * width, 4 * width, 4, 2, 1), nn.ReLU(),
            nn.Flatten(),
        )
        flat = 4 * width * side * side
        self.mu = nn.Linear(flat, latent_dim)
        self.logvar = nn.Linear(flat, latent_dim)
        self.expand = nn.Linear(latent_dim, flat)
        self.decoder = nn.Sequential(
            nn.Unflatten(1, (4 * width, side, side)),
            nn.ConvTranspose2d(4 * width, 2 * width, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(width, 3, 4, 2, 1), nn.Sigmoid(),
        )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent mean and log-variance ``(N, latent_dim)`` of images ``(N, 3, size, size)`` in [0, 1]."""
        h = self.encoder(x)
        return self.mu(h), self.logvar(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images ``(N, 3, size, size)`` in [0, 1] from latents."""
        return self.decoder(self.expand(z))

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None):
        mu, logvar = self.encode(x)
        noise = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        z = mu + noise * torch.exp(0.5 * logvar)
        return self.decode(z), mu, logvar

    @torch.no_grad()
    def embed(self, images: torch.Tensor, batch_size: int = 256) -> np.ndarray:
        """Latent means, float32 ``(N, latent_dim)``, of images ``(N, 3, H, W)`` in [0, 1] (resized)."""
        was_training = self.training
        self.eval()
        out = []
        for start in range(0, len(images), batch_size):
            x = _resize(images[start : start + batch_size], self.size)
            out.append(self.encode(x)[0].cpu().numpy())
        self.train(was_training)
        return np.concatenate(out).astype(np.float32)


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    images = images.float()
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    if images.shape[-2:] != (size, size):
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return images.clamp(0, 1)


def train_vae(
    images: torch.Tensor,
    *,
    latent_dim: int = 8,
    size: int = 32,
    epochs: int = 30,
    batch_size: int = 64,
    lr: float = 2e-3,
    beta: float = 1.0,
    seed: int = 0,
    progress: bool = False,
) -> SmallVAE:
    """Train a :class:`SmallVAE` on a pool of images (Bernoulli-free MSE reconstruction + beta KL).

    Args:
        images: float ``(N, 3, H, W)`` in [0, 1]; resized to ``size``.
        latent_dim: latent size.
        size: training resolution (multiple of 8).
        epochs: passes over the pool.
        batch_size: images per step.
        lr: Adam learning rate.
        beta: weight of the KL term.
        seed: seeds the initialisation, shuffling and sampling (global RNG untouched).
        progress: show a progress bar.

    Returns:
        The trained VAE in eval mode.

    Raises:
        InvalidInputError: fewer than 2 images.
    """
    if len(images) < 2:
        raise InvalidInputError(f"a VAE needs at least 2 images to train on; got {len(images)}")
    generator = torch.Generator().manual_seed(seed)
    data = _resize(images, size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = SmallVAE(latent_dim, size)
    optimizer = torch.optim.Adam(vae.parameters(), lr=lr)
    vae.train()
    for epoch in tqdm(range(epochs), desc="VAE", disable=not progress):
        order = torch.randperm(len(data), generator=generator)
        total = 0.0
        for start in range(0, len(order), batch_size):
            x = data[order[start : start + batch_size]]
            recon, mu, logvar = vae(x, generator)
            rec = F.mse_loss(recon, x, reduction="sum") / len(x)
            kl = -0.5 * torch.sum(1 + logvar - mu**2 - logvar.exp()) / len(x)
            loss = rec + beta * kl
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(x)
        logger.debug("VAE epoch %d: loss %.3f", epoch + 1, total / len(data))
    return vae.eval()
