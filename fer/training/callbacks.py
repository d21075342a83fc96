"""Callbacks the configs switch on beyond Lightning's own."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter


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
