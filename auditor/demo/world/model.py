"""The small CNN the demo trains on the generated world."""

from __future__ import annotations

import torch
from torch import nn


def _block(c_in: int, c_out: int, pool: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class SmallCNN(nn.Module):
    """Four conv blocks, global average pooling and a linear head.

    The last conv block's channels are the model's neural features, so CAMs of
    single features are the channels of that block's output.

    Args:
        n_classes: number of outputs of the head.
        width: channels of the first block; later blocks use 2x and 4x.
    """

    def __init__(self, n_classes: int, width: int = 16):
        super().__init__()
        self.mean = nn.Parameter(torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1), requires_grad=False)
        self.std = nn.Parameter(torch.tensor([0.25, 0.25, 0.25]).view(1, 3, 1, 1), requires_grad=False)
        self.features = nn.Sequential(
            _block(3, width, pool=True),
            _block(width, 2 * width, pool=True),
            _block(2 * width, 4 * width, pool=True),
            _block(4 * width, 4 * width, pool=False),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))
