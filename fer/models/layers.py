"""Building blocks shared by the architectures."""

from __future__ import annotations

import torch
from torch import nn


class Dropout(nn.Dropout):
    """``nn.Dropout`` with a faster mask on the CPU; the same distribution (p rounded to 1/65536).

    PyTorch's CPU ``bernoulli_`` draws one random number per element and made up a fifth of the
    baseline's training step; here each 64-bit random word is cut into four 16-bit lanes and a
    lane keeps its element when it is at or above the ``p`` quantile.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or x.device.type != "cpu" or self.p >= 1:
            return super().forward(x)
        n = x.numel()
        words = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), 2**63 - 1)
        lanes = torch.empty_like(x, dtype=torch.int16)
        # Fill in storage order, so the mask shares x's memory format (channels-last stays channels-last).
        lanes.as_strided((n,), (1,)).copy_(words.view(torch.int16)[:n])
        keep = lanes >= int(-32768 + round(self.p * 65536))
        return x * (keep.to(x.dtype) * (1.0 / (1.0 - self.p)))


class TokenTransformer(nn.Module):
    """A transformer encoder over the H×W positions of a (N, C, H, W) feature map, which it returns reshaped."""

    def __init__(self, channels: int, positions: int, layers: int, drop_rate: float = 0.0, heads: int = 8) -> None:
        super().__init__()
        self.position = nn.Parameter(torch.zeros(1, positions, channels))
        nn.init.trunc_normal_(self.position, std=0.02)
        layer = nn.TransformerEncoderLayer(
            channels, heads, dim_feedforward=2 * channels, dropout=drop_rate, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2) + self.position
        return self.encoder(tokens).transpose(1, 2).reshape(n, c, h, w)
