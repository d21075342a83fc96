"""Finding faces in photos: a small detector interface and OpenCV's Haar cascade, which ships in its wheel."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

import cv2
import numpy as np
from PIL import Image

from fer.data.reading import check_pixels, opened_image, to_gray


@dataclass(frozen=True)
class Box:
    """A face's pixel box: left, top, width, height."""

    x: int
    y: int
    w: int
    h: int

    @property
    def area(self) -> int:
        return self.w * self.h

    def as_list(self) -> list[int]:
        return [self.x, self.y, self.w, self.h]

    def iou(self, other: Box) -> float:
        """Intersection over union of the two boxes."""
        ix = max(0, min(self.x + self.w, other.x + other.w) - max(self.x, other.x))
        iy = max(0, min(self.y + self.h, other.y + other.h) - max(self.y, other.y))
        inter = ix * iy
        return inter / (self.area + other.area - inter) if inter else 0.0


class FaceDetector(Protocol):
    """Anything that finds face boxes in a uint8 grayscale image can be plugged into the recognizer."""

    def __call__(self, gray: np.ndarray) -> list[Box]: ...


class HaarFaceDetector:
    """OpenCV's frontal-face Haar cascade (Viola & Jones, CVPR 2001); needs no download.

    The defaults were chosen on FER2013 validation faces pasted into 640×480 photos (``python -m fer bench
    detect``): fewer required neighbours and no histogram equalisation find more of them. Images whose longer
    side exceeds ``max_side`` are searched downscaled (boxes are returned in the original's pixels): the
    cascade's cost grows with the pixel count, and faces that matter in a photo are rarely tiny. ``min_size``,
    the smallest face searched for, is in the original's pixels too (the cascade's window, 24 px in the searched
    image, is the floor); in video, where faces are large, a bigger one halves the search (``stream --min-face``).
    """

    def __init__(self, scale_factor: float = 1.1, min_neighbors: int = 3, min_size: int = 24,
                 max_side: int | None = 640, equalize: bool = False,
                 cascade: str = "haarcascade_frontalface_default.xml") -> None:
        path = Path(cv2.data.haarcascades) / cascade
        self.cascade = cv2.CascadeClassifier(str(path))
        if self.cascade.empty():
            raise RuntimeError(f"OpenCV could not load {path}; install opencv-python-headless<5, which ships it")
        self.scale_factor, self.min_neighbors, self.min_size = scale_factor, min_neighbors, min_size
        self.max_side, self.equalize = max_side, equalize

    def __call__(self, gray: np.ndarray) -> list[Box]:
        scale = min(1.0, self.max_side / max(gray.shape)) if self.max_side else 1.0
        if scale < 1.0:  # at least a pixel a side: a 21 × 26,913 upload would otherwise shrink to no rows at all
            size = (max(1, round(gray.shape[1] * scale)), max(1, round(gray.shape[0] * scale)))
            gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        found = self.cascade.detectMultiScale(
            cv2.equalizeHist(gray) if self.equalize else gray, scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors, minSize=(round(self.min_size * scale),) * 2,
        )
        return [Box(*(round(float(v) / scale) for v in box)) for box in found]


def load_gray(image: str | Path | BinaryIO | Image.Image | np.ndarray, name: str | None = None) -> np.ndarray:
    """A uint8 grayscale array from a path, file object, PIL image or array (BGR/BGRA as OpenCV gives),
    EXIF orientation honoured; an unreadable image raises ``FERDataError`` naming ``name`` (default: the path)."""
    if isinstance(image, np.ndarray):
        if image.ndim == 3:
            return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY if image.shape[2] == 3 else cv2.COLOR_BGRA2GRAY)
        return image.astype(np.uint8, copy=False)
    if isinstance(image, Image.Image):
        check_pixels(image, name or "image")
        return np.asarray(to_gray(image))
    with opened_image(image, name or str(image)) as im:
        check_pixels(im, name or str(image))
        return np.asarray(to_gray(im))


def crop(gray: np.ndarray, box: Box, margin: float = 0.1) -> np.ndarray:
    """The box widened by ``margin`` of its size on every side, clipped to the image."""
    dx, dy = int(box.w * margin), int(box.h * margin)
    y0, y1 = max(box.y - dy, 0), min(box.y + box.h + dy, gray.shape[0])
    x0, x1 = max(box.x - dx, 0), min(box.x + box.w + dx, gray.shape[1])
    return gray[y0:y1, x0:x1]
