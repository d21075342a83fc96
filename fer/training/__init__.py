"""Training: the LightningModule and the callbacks the configs use."""

from fer.training.callbacks import EMAWeights, EpochSWA, PredictionCSVWriter, RNGStates
from fer.training.module import EmotionClassifier

__all__ = ["EMAWeights", "EmotionClassifier", "EpochSWA", "PredictionCSVWriter", "RNGStates"]
