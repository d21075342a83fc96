"""Callbacks the configs switch on beyond Lightning's own."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter, EMAWeightAveraging, WeightAveraging


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


class _AveragedOnceStarted(WeightAveraging):
    """Lightning's weight averaging, with the average standing in for the model (validation, checkpoints, the end
    of training) only once it holds at least one update: before that it is a copy of the weights training
    started from, which would be validated and checkpointed as if it were the run's."""

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


class EMAWeights(_AveragedOnceStarted, EMAWeightAveraging):
    """Lightning's exponential moving average of the weights, standing in for the model once averaging has
    started: before ``update_starting_at_step`` the average is still the random initialisation, and averaging
    from step 0 mixes it into BatchNorm statistics."""


class EpochSWA(_AveragedOnceStarted):
    """Stochastic weight averaging (Izmailov et al., UAI 2018) with a cyclic learning rate: the equal average of
    the weights (and BatchNorm statistics) at the end of every epoch, for a schedule that anneals once per epoch
    (e.g. ``CosineAnnealingWarmRestarts`` stepped per batch), so only low-rate points are averaged.

    The average takes each epoch's weights after its last training batch, before that epoch's validation, so
    validation and the checkpoints of epoch k both see the average of epochs 0…k. (Lightning's epoch-wise
    update comes after validation: the best checkpoint would hold an average its score was not measured on.)"""

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        return False  # updated in on_train_batch_end, at the last batch of each epoch

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch and self._average_model is not None:
            self._average_model.update_parameters(pl_module)


class RNGStates(L.Callback):
    """Keeps the random number generators' states (Python, NumPy, torch CPU and CUDA) in every checkpoint and
    restores them when a run resumes, so the resumed run draws new augmentations, dropout masks and batch
    orders. Without it, ``seed_everything`` restarts the stream the run began with: resumed 5 epochs after an
    earlier resume, the seed CNN met the very same augmented faces under the very same dropout masks again,
    and its training accuracy jumped from 56% to 66% in one epoch while validation fell.

    A checkpoint written without these states resumes with the generators seeded from the run's seed plus the
    epoch it resumes at."""

    def __init__(self) -> None:
        self.restored = False

    def state_dict(self) -> dict:
        return {
            "python": random.getstate(),
            # as plain values: resuming loads checkpoints with torch.load(weights_only=True), which refuses arrays
            "numpy": [v.tolist() if isinstance(v, np.ndarray) else v for v in np.random.get_state()],
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def load_state_dict(self, state_dict: dict) -> None:
        random.setstate(state_dict["python"])
        name, keys, *rest = state_dict["numpy"]
        np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))
        torch.set_rng_state(state_dict["torch"])
        if state_dict["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])
        self.restored = True

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.ckpt_path and not self.restored and trainer.current_epoch > 0:
            L.seed_everything(torch.initial_seed() + trainer.current_epoch, verbose=False)
