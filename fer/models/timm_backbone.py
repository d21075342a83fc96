"""Any timm model as a FER backbone: 1-channel input, a fresh head, optional upsampling and pretrained weights."""

from __future__ import annotations

from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import nn

# Families whose position embeddings fix the input size at construction.
_FIXED_SIZE_PREFIXES = ("vit", "deit", "beit", "eva", "swin", "cait", "xcit", "levit")


class TimmBackbone(nn.Module):
    """A timm model behind an optional bilinear resize of the (N, C, S, S) faces to ``input_size``."""

    def __init__(self, model: nn.Module, input_size: int | None) -> None:
        super().__init__()
        self.model, self.input_size = model, input_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_size and x.shape[-1] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        return self.model(x)

    def get_classifier(self) -> nn.Module:
        return self.model.get_classifier()


def create_timm_backbone(
    name: str,
    *,
    in_chans: int = 1,
    num_classes: int = 7,
    drop_rate: float = 0.0,
    image_size: int = 48,
    input_size: int | None = None,
    pretrained: bool = False,
    pretrained_path: str | None = None,
    **kwargs,
) -> TimmBackbone:
    """Build timm model ``name``.

    Args:
        input_size: side the faces are upsampled to before the model (default: ``image_size``, no resize).
        pretrained: load timm's pretrained weights through its normal download (needs a network).
        pretrained_path: load pretrained weights from this local state-dict file instead (no network).
            Either way timm adapts the first layer to ``in_chans`` and drops the old classifier.
    """
    size = input_size or image_size
    if name.startswith(_FIXED_SIZE_PREFIXES):
        kwargs.setdefault("img_size", size)
    overlay = None
    if pretrained_path:
        if not Path(pretrained_path).is_file():
            raise FileNotFoundError(f"model.backbone_kwargs.pretrained_path: {pretrained_path} is not a file")
        overlay = {"file": str(pretrained_path)}
    try:
        model = timm.create_model(
            name, pretrained=pretrained or bool(pretrained_path), pretrained_cfg_overlay=overlay,
            in_chans=in_chans, num_classes=num_classes, drop_rate=drop_rate, **kwargs,
        )
    except (OSError, RuntimeError) as e:
        if not pretrained or pretrained_path:
            raise
        raise RuntimeError(
            f"Could not fetch timm's pretrained weights for {name!r} ({type(e).__name__}: {e}). "
            "Offline? Download the weights on a machine with a network (timm.create_model(name, pretrained=True) "
            "then torch.save(model.state_dict(), FILE)) and set model.backbone_kwargs.pretrained_path: FILE."
        ) from e
    return TimmBackbone(model, size if size != image_size else None)
