"""OpenCV's Haar cascade, which ships in OpenCV's wheel."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from fer.errors import ConfigError
from fer.faces.base import Box, as_gray, downscaled


class HaarFaceDetector:
    """OpenCV's frontal-face Haar cascade (Viola & Jones, CVPR 2001); needs no download.

    The defaults were chosen on FER2013 validation faces pasted into 640×480 photos (``python -m fer bench
    detect``): fewer required neighbours and no histogram equalisation find more of them. Images whose longer
    side exceeds ``max_side`` are searched downscaled (boxes are returned in the original's pixels): the
    cascade's cost grows with the pixel count, and faces that matter in a photo are rarely tiny. ``min_size``,
    the smallest face searched for, is in the original's pixels too (the cascade's window, 24 px in the searched
    image, is the floor); in video, where faces are large, a bigger one halves the search (``stream --min-face``).
    A box's ``score`` is the cascade's last-stage sum (OpenCV's level weight); ``threshold`` drops boxes below it.
    """

    crop_margin = 0.1  # the recognizer's crop around its boxes, a share of the side

    def __init__(self, scale_factor: float = 1.1, min_neighbors: int = 3, min_size: int = 24,
                 max_side: int | None = 640, equalize: bool = False, threshold: float | None = None,
                 cascade: str = "haarcascade_frontalface_default.xml") -> None:
        path = Path(cascade) if Path(cascade).is_file() else Path(cv2.data.haarcascades) / cascade
        self.cascade = cv2.CascadeClassifier(str(path))
        if self.cascade.empty():
            raise ConfigError(f"OpenCV could not load the Haar cascade {path}: expected a cascade .xml file, or "
                              "opencv-python-headless<5, which ships {cascade}")
        self.scale_factor, self.min_neighbors, self.min_size = scale_factor, min_neighbors, min_size
        self.max_side, self.equalize, self.threshold = max_side, equalize, threshold

    def __call__(self, image: np.ndarray) -> list[Box]:
        gray, scale = downscaled(as_gray(image), self.max_side)
        found, _, weights = self.cascade.detectMultiScale3(
            cv2.equalizeHist(gray) if self.equalize else gray, scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors, minSize=(round(self.min_size * scale),) * 2, outputRejectLevels=True,
        )
        return [Box(*(round(float(v) / scale) for v in box), score=round(float(w), 3))
                for box, w in zip(found, np.ravel(weights)) if self.threshold is None or w >= self.threshold]
