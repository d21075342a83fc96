"""Soft training targets from trained models (knowledge distillation: Hinton et al., 2015; "born-again" networks,
Furlanello et al., ICML 2018)."""

from __future__ import annotations

from pathlib import Path

import torch
from rich.progress import track

from fer.data.reading import FERDataError
from fer.hardware import cpu_autocast
from fer.runs import check_checkpoint


def load_teacher(checkpoint: str | Path, emotions: list[str]) -> torch.nn.Module:
    """The trained ``EmotionClassifier`` in ``checkpoint``, in eval mode on the CPU; it must classify ``emotions``."""
    from fer.training import EmotionClassifier  # the data package must not need the training one otherwise

    model = EmotionClassifier.load_from_checkpoint(check_checkpoint(checkpoint), map_location="cpu").eval()
    if model.emotions != list(emotions):
        raise FERDataError(
            f"data.teacher {checkpoint}: it classifies {model.emotions}; this data module has {list(emotions)}"
        )
    return model


def teacher_input(teacher: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(N, 1, S, S) faces in [0, 1] resized to the teacher's input size, so a student may train at another one."""
    size = teacher.hparams.image_size
    if x.shape[-1] != size:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
    return x


@torch.inference_mode()
def teacher_probabilities(checkpoint: str | Path, images: torch.Tensor, emotions: list[str],
                          batch_size: int = 256) -> torch.Tensor:
    """The calibrated probabilities (N, len(emotions)) that the model in ``checkpoint`` gives the (N, H, W)
    uint8 ``images``, with its own test-time views."""
    model = load_teacher(checkpoint, emotions)
    batches = range(0, len(images), batch_size)
    out = []
    for i in track(batches, description=f"Teacher {Path(checkpoint).name}", transient=True):
        with cpu_autocast():
            out.append(model.probabilities(teacher_input(model, images[i:i + batch_size].unsqueeze(1).float() / 255)))
    return torch.cat(out)
