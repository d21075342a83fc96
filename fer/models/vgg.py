"""A VGG-style network with BatchNorm sized for 48×48 faces (Khaireddin & Chen, "Facial Emotion
Recognition: State of the Art Performance on FER2013", 2021), with a global-average-pooled head so
any input side (crops for test-time augmentation included) works and the weights stay small.
"""

from __future__ import annotations

import torch
from torch import nn

from fer.errors import ConfigError
from fer.models.layers import Dropout


def _stage(in_chans: int, out_chans: int, depth: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [
            nn.Conv2d(in_chans if i == 0 else out_chans, out_chans, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_chans),
            nn.ReLU(inplace=True),
        ]
    return nn.Sequential(*layers, nn.MaxPool2d(2))


class VGGNet(nn.Module):
    """``len(widths)`` stages of ``depth`` conv-BN-ReLU layers and a 2×2 max-pool, then average pool,
    dropout and a linear classifier."""

    def __init__(
        self,
        in_chans: int = 1,
        num_classes: int = 7,
        drop_rate: float = 0.3,
        image_size: int = 48,
        widths: tuple[int, ...] = (64, 128, 256, 512),
        depth: int = 2,
    ) -> None:
        super().__init__()
        if image_size < 2 ** len(widths):
            raise ConfigError(f"model.image_size: VGGNet with {len(widths)} pooling stages needs at least "
                              f"{2 ** len(widths)}, got {image_size}")
        chans = (in_chans, *widths)
        self.features = nn.Sequential(*(_stage(chans[i], chans[i + 1], depth) for i in range(len(widths))))
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), Dropout(drop_rate), nn.Linear(widths[-1], num_classes)
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def get_classifier(self) -> nn.Module:
        return self.head[-1]
