"""Soft training targets from trained models (knowledge distillation: Hinton et al., 2015; "born-again" networks,
Furlanello et al., ICML 2018)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from rich.progress import track

from fer.data import FERDataError, FERDataModule
from fer.hardware import cpu_autocast
from fer.runs import check_checkpoint
from fer.training.module import EmotionClassifier


def load_teacher(checkpoint: str | Path, emotions: list[str]) -> torch.nn.Module:
    """The trained ``EmotionClassifier`` in ``checkpoint``, in eval mode on the CPU; it must classify ``emotions``."""
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


class TeacherTargets(L.Callback):
    """Gives an ``FERDataModule`` with ``data.teacher`` its teachers' probabilities when training starts: once, on
    the un-augmented training faces (``teacher_mode: fixed``), or as a function of each augmented batch
    (``consistent``). ``fer.training.Trainer`` always has one; without it such a data module refuses to train."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        dm = trainer.datamodule
        if stage != "fit" or not isinstance(dm, FERDataModule) or not dm.teacher_paths:
            return
        if dm.hparams.teacher_mode == "fixed" and not dm.teacher_blended:
            images = dm.tables["train"].images
            probs = torch.stack([teacher_probabilities(t, images, dm.emotions) for t in dm.teacher_paths]).mean(0)
            dm.set_teacher_probabilities(probs)
        if dm.hparams.teacher_mode == "consistent" and dm.batch_teacher is None:
            teachers = [load_teacher(t, dm.emotions) for t in dm.teacher_paths]
            for t in teachers:  # the student's view alone: that is the method, and half the cost
                t.hparams.tta_flip, t.hparams.tta_shift, t.hparams.tta_crop = False, 0, 0

            def batch_teacher(x: torch.Tensor) -> torch.Tensor:
                return torch.stack([t.to(x.device).probabilities(teacher_input(t, x)) for t in teachers]).mean(0)

            dm.batch_teacher = batch_teacher
