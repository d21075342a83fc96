"""Training: the LightningModule and the callbacks the configs use."""

from fer.training.callbacks import EMAWeights, EpochSWA, PredictionCSVWriter, RNGStates
from fer.training.ensemble import ensemble_of
from fer.training.module import EmotionClassifier
from fer.training.sam import SAMAdamW
from fer.training.teacher import TeacherTargets
from fer.training.trainer import Trainer

__all__ = [
    "EMAWeights", "EmotionClassifier", "EpochSWA", "PredictionCSVWriter", "RNGStates", "SAMAdamW", "TeacherTargets",
    "Trainer", "ensemble_of",
]
