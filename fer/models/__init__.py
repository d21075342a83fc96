"""Architectures as plain ``nn.Module``s, picked by name: the registry below, else any timm model.

Every builder takes the same keyword arguments — ``in_chans``, ``num_classes``, ``drop_rate``,
``image_size`` — plus its own extras, and returns a module mapping (N, in_chans, S, S) to logits.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import timm
from torch import nn

from fer.errors import ConfigError
from fer.models.baseline import BaselineCNN
from fer.models.ensemble import Ensemble
from fer.models.timm_backbone import create_timm_backbone
from fer.models.vgg import VGGNet


def _ensemble(*, members: list[dict] | None = None, weights: list[float] | None = None, in_chans: int = 1,
              num_classes: int = 7, drop_rate: float = 0.0, image_size: int = 48) -> Ensemble:
    """Trained networks averaged (``members``: see ``Ensemble``); built from checkpoints by
    ``fer.training.ensemble_of``."""
    if not members:
        raise ConfigError("backbone 'ensemble' averages trained models: build one from their checkpoints "
                          "(python -m fer export --ckpt A.ckpt B.ckpt --output ensemble.ckpt --format checkpoint)")
    nets = [create_model(spec["backbone"], in_chans=in_chans, num_classes=num_classes,
                         drop_rate=spec.get("drop_rate", drop_rate), image_size=image_size,
                         **(spec.get("backbone_kwargs") or {}))
            for spec in members]
    return Ensemble(nets, members, weights)


MODELS: dict[str, Callable[..., nn.Module]] = {
    "baseline": BaselineCNN,
    "baseline_bn": partial(BaselineCNN, batch_norm=True),
    "baseline_se": partial(BaselineCNN, attention="se"),
    "baseline_cbam": partial(BaselineCNN, attention="cbam"),
    "baseline_mhsa": partial(BaselineCNN, transformer_layers=2),
    "vgg": VGGNet,
    "vgg_half": partial(VGGNet, widths=(32, 64, 128, 256)),
    "ensemble": _ensemble,
}


def create_model(
    name: str, *, in_chans: int = 1, num_classes: int = 7, drop_rate: float = 0.0, image_size: int = 48, **kwargs
) -> nn.Module:
    """Build the registered architecture ``name``, or else the timm model of that name."""
    builder = MODELS.get(name) or (partial(create_timm_backbone, name) if timm.is_model(name) else None)
    if builder is None:
        raise ConfigError(
            f"Unknown backbone {name!r} (model.backbone); registered backbones: {sorted(MODELS)}, or any timm model "
            "name (e.g. resnet18, convnext_atto, mobilenetv3_small_100; see timm.list_models())"
        )
    return builder(in_chans=in_chans, num_classes=num_classes, drop_rate=drop_rate, image_size=image_size, **kwargs)
