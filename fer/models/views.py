"""Input normalisation and test-time views, shared by training, exports and ensembles."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.transforms.v2.functional import five_crop


def normalize_input(x: torch.Tensor, normalize: tuple[float, float] | None) -> torch.Tensor:
    """``(x - mean) / std`` for ``normalize = (mean, std)``; ``x`` unchanged for ``None``."""
    if normalize is None:
        return x
    mean, std = normalize
    return (x - mean) / std


def tta_views(x: torch.Tensor, flip: bool, shift: int, crop: int = 0) -> list[torch.Tensor]:
    """``x``; with ``shift`` > 0 also ``x`` moved ``shift`` pixels up, down, left and right (edges repeated);
    with ``crop`` > 0 instead the centre and four corner crops of side ``crop``; with ``flip`` also the mirror
    image of each of those (``crop`` and ``flip``: the ten-crop protocol of Khaireddin & Chen)."""
    views = list(five_crop(x, [crop, crop])) if crop else [x]
    if shift:
        padded = F.pad(x, (shift,) * 4, mode="replicate")
        side_h, side_w = x.shape[-2:]
        for dy, dx in ((-shift, 0), (shift, 0), (0, -shift), (0, shift)):
            views.append(padded[..., shift + dy:shift + dy + side_h, shift + dx:shift + dx + side_w])
    return views + [v.flip(-1) for v in views] if flip else views


def net_logits(net: torch.nn.Module, x: torch.Tensor, tta_flip: bool, tta_shift: int = 0,
               tta_crop: int = 0) -> torch.Tensor:
    """The mean logits of the test-time views of ``x`` (``tta_views``); ``net(x)`` when there is only one."""
    views = tta_views(x, tta_flip, tta_shift, tta_crop)
    return net(x) if len(views) == 1 else torch.stack([net(v) for v in views]).mean(0)
