"""Finding faces in photos: detectors picked by name, boxes, crops and eye alignment."""

from __future__ import annotations

from collections.abc import Callable

from fer.errors import ConfigError
from fer.faces.base import Box, FaceDetector, as_gray, as_rgb, crop, load_gray, load_image
from fer.faces.haar import HaarFaceDetector
from fer.faces.mtcnn import MTCNNFaceDetector

DETECTORS: dict[str, Callable[..., FaceDetector]] = {"mtcnn": MTCNNFaceDetector, "haar": HaarFaceDetector}
DEFAULT_DETECTOR = "mtcnn"


def create_detector(name: str = DEFAULT_DETECTOR, **kwargs) -> FaceDetector:
    """The detector registered as ``name``, built with ``kwargs`` (e.g. ``min_size``, ``threshold``)."""
    if name not in DETECTORS:
        raise ConfigError(f"unknown face detector {name!r}; known: {', '.join(DETECTORS)}")
    return DETECTORS[name](**kwargs)


__all__ = ["DEFAULT_DETECTOR", "DETECTORS", "Box", "FaceDetector", "HaarFaceDetector", "MTCNNFaceDetector",
           "as_gray", "as_rgb", "create_detector", "crop", "load_gray", "load_image"]
