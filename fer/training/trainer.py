"""Lightning's Trainer with the precision chosen from the hardware."""

from __future__ import annotations

import lightning as L

from fer.hardware import Precision, resolve_precision


class Trainer(L.Trainer):
    """``lightning.Trainer`` whose ``precision`` defaults to ``auto``: ``bf16-mixed`` on a CUDA GPU or a CPU with
    native bf16, ``16-mixed`` on an older GPU, ``32-true`` elsewhere (``fer.hardware.choose_precision``)."""

    def __init__(self, *args, precision: Precision = "auto", **kwargs) -> None:
        accelerator = kwargs.get("accelerator", "auto")
        precision = resolve_precision(precision, accelerator if isinstance(accelerator, str) else "auto")
        super().__init__(*args, precision=precision, **kwargs)
