"""Lightning's Trainer with the precision chosen from the hardware, and the callbacks every run needs."""

from __future__ import annotations

import lightning as L

from fer.hardware import Precision, resolve_precision
from fer.training.callbacks import RNGStates
from fer.training.teacher import TeacherTargets


class Trainer(L.Trainer):
    """``lightning.Trainer`` whose ``precision`` defaults to ``auto``: ``bf16-mixed`` on a CUDA GPU or a CPU with
    native bf16, ``16-mixed`` on an older GPU, ``32-true`` elsewhere (``fer.hardware.choose_precision``). Whatever
    callbacks it is given, it adds ``RNGStates`` (a resumed run must not replay the seed's random stream) and
    ``TeacherTargets`` (the soft targets of ``data.teacher``)."""

    def __init__(self, *args, precision: Precision = "auto", callbacks: L.Callback | list[L.Callback] | None = None,
                 **kwargs) -> None:
        accelerator = kwargs.get("accelerator", "auto")
        precision = resolve_precision(precision, accelerator if isinstance(accelerator, str) else "auto")
        callbacks = [callbacks] if isinstance(callbacks, L.Callback) else list(callbacks or [])
        super().__init__(*args, precision=precision, callbacks=[*callbacks, RNGStates(), TeacherTargets()], **kwargs)
