"""Data: reading and caching faces, the built-in synthetic faces, and the LightningDataModule."""

from fer.data.datamodule import Augmentation, FERDataModule
from fer.data.reading import FERDataError

__all__ = ["Augmentation", "FERDataError", "FERDataModule"]
