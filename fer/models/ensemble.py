"""Several trained networks as one: the weighted mean of their calibrated probabilities.

Each member keeps what its own checkpoint applied around its network (input normalisation, test-time views,
softmax temperature), so one ``nn.Module`` holds the whole ensemble and exports to one ONNX graph. Its output is
the log of the mean probabilities: a softmax of it gives them back, so it takes the place of logits anywhere.
"""

from __future__ import annotations

import torch
from torch import nn

from fer.errors import ConfigError
from fer.models.views import net_logits, normalize_input

# What a member's checkpoint applied around its network, besides the network's own builder arguments; and, for a
# member that is a shipped model, which file holds its weights (the network ignores those two: see fer.runs).
MEMBER_KEYS = {"backbone", "backbone_kwargs", "drop_rate", "normalize", "tta_flip", "tta_shift", "tta_crop",
               "temperature", "shipped_file", "sha256"}


class Ensemble(nn.Module):
    """Args:
        nets: the members' networks (``fer.models.create_model`` builds them from ``specs``).
        specs: one dict a member: its ``backbone`` and ``backbone_kwargs``, ``drop_rate``, ``normalize``,
            ``tta_flip``, ``tta_shift``, ``tta_crop`` and ``temperature``, as its checkpoint stored them; a shipped
            model's also its ``shipped_file`` and that file's ``sha256``.
        weights: a weight a member (default: equal); scaled to sum to 1.
    """

    def __init__(self, nets: list[nn.Module], specs: list[dict], weights: list[float] | None = None) -> None:
        super().__init__()
        weights = [1.0] * len(specs) if weights is None else list(weights)
        if not specs or len(weights) != len(specs) or min(weights) < 0 or sum(weights) <= 0:
            raise ConfigError(f"ensemble: expected members and as many non-negative weights, got {len(specs)} "
                              f"members and weights {weights}")
        for spec in specs:
            if unknown := set(spec) - MEMBER_KEYS:
                raise ConfigError(f"ensemble member: unknown keys {sorted(unknown)}; expected {sorted(MEMBER_KEYS)}")
        self.members, self.specs = nn.ModuleList(nets), [dict(spec) for spec in specs]
        self.register_buffer("weights", torch.tensor(weights) / sum(weights))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = 0
        for net, spec, weight in zip(self.members, self.specs, self.weights):
            logits = net_logits(net, normalize_input(x, spec.get("normalize")), spec.get("tta_flip", False),
                                spec.get("tta_shift", 0), spec.get("tta_crop", 0))
            mean = mean + weight * (logits.float() / spec.get("temperature", 1.0)).softmax(-1)
        return mean.clamp_min(1e-12).log()
