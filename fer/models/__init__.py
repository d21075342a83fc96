"""Architectures as plain ``nn.Module``s, picked by name.

Every builder takes the same keyword arguments — ``in_chans``, ``num_classes``, ``drop_rate``,
``image_size`` — plus its own extras, and returns a module mapping (N, in_chans, S, S) to logits.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from fer.models.baseline import BaselineCNN

MODELS: dict[str, Callable[..., nn.Module]] = {
    "baseline": BaselineCNN,
}


def create_model(
    name: str, *, in_chans: int = 1, num_classes: int = 7, drop_rate: float = 0.0, image_size: int = 48, **kwargs
) -> nn.Module:
    """Build the registered architecture ``name``."""
    if name not in MODELS:
        raise ValueError(f"Unknown backbone {name!r}; registered backbones: {sorted(MODELS)}")
    return MODELS[name](in_chans=in_chans, num_classes=num_classes, drop_rate=drop_rate, image_size=image_size, **kwargs)
