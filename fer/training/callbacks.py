"""Callbacks the configs switch on beyond Lightning's own."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter, EMAWeightAveraging


class PredictionCSVWriter(BasePredictionWriter):
    """Writes ``predictions.csv`` (file, predicted emotion, confidence, one probability per emotion)
    into the run's log directory at the end of ``predict``."""

    def __init__(self, filename: str = "predictions.csv") -> None:
        super().__init__(write_interval="epoch")
        self.filename = filename

    def write_on_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, predictions, batch_indices) -> None:
        if not trainer.is_global_zero:
            return
        probs = torch.cat(predictions)
        emotions = pl_module.emotions
        out = Path(trainer.log_dir or ".") / self.filename
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["file", "emotion", "confidence", *emotions])
            for path, p in zip(trainer.datamodule.predict_files, probs.tolist()):
                best = max(range(len(p)), key=p.__getitem__)
                writer.writerow([path, emotions[best], f"{p[best]:.4f}", *(f"{v:.4f}" for v in p)])
        print(f"Wrote {len(probs)} predictions to {out}")


class EMAWeights(EMAWeightAveraging):
    """Lightning's exponential moving average of the weights, standing in for the model (validation, checkpoints,
    the end of training) only once averaging has started: before ``update_starting_at_step`` the average is
    still the random initialisation, and averaging from step 0 mixes it into BatchNorm statistics."""

    def _started(self) -> bool:
        return self._average_model is not None and int(self._average_model.n_averaged) > 0

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._started():
            super().on_validation_epoch_start(trainer, pl_module)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._started():
            super().on_validation_epoch_end(trainer, pl_module)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if self._started():
            super().on_save_checkpoint(trainer, pl_module, checkpoint)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._started():
            super().on_train_end(trainer, pl_module)
