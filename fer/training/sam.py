"""Sharpness-aware minimisation (Foret et al., ICLR 2021) on top of AdamW."""

from __future__ import annotations

from collections.abc import Callable

import torch

from fer.errors import ConfigError


class SAMAdamW(torch.optim.AdamW):
    """AdamW stepping with the gradient taken at the worst point within ``rho`` (L2) of the weights: each step
    runs the closure twice — at the weights, then at the weights moved ``rho`` along their normalised gradient
    — and AdamW applies the second gradient to the original weights. Twice the work of a step; FER2013's noisy
    labels are where the paper's flatter minima paid most.

    It needs the closure, so it suits Lightning's automatic optimisation, which hands the optimiser the
    training step as one. Both passes run ``training_step``: the logged training loss and accuracy count each
    batch twice, at the weights and at the perturbed weights, and BatchNorm's running statistics see both.
    """

    def __init__(self, params, rho: float = 0.05, **kwargs) -> None:
        if rho <= 0:
            raise ConfigError(f"model.optimizer.init_args.rho: SAMAdamW's radius must be positive, got {rho}")
        super().__init__(params, **kwargs)
        self.rho = rho

    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor:
        if closure is None:
            raise ValueError("SAMAdamW.step needs the closure that recomputes the loss and its gradients")
        with torch.enable_grad():
            loss = closure()
        params = [p for group in self.param_groups for p in group["params"] if p.grad is not None]
        with torch.no_grad():
            grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params])
            shifts = [p.grad * (self.rho / (grad_norm + 1e-12)) for p in params]
            for p, shift in zip(params, shifts):
                p.add_(shift)
        with torch.enable_grad():
            closure()
        with torch.no_grad():
            for p, shift in zip(params, shifts):
                p.sub_(shift)
        super().step()
        return loss
