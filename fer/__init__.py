"""fer: facial emotion recognition with PyTorch Lightning."""

from fer.api import EmotionRecognizer
from fer.emotions import EMOTIONS

__version__ = "0.1.0"
__all__ = ["EMOTIONS", "EmotionRecognizer"]
