"""What every face detector shares: boxes, the detector interface, loading images, cropping and aligning faces."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

import cv2
import numpy as np
from PIL import Image, ImageOps

from fer.data.reading import check_pixels, opened_image, to_gray

Point = tuple[float, float]


@dataclass(frozen=True)
class Box:
    """A face's pixel box: left, top, width, height; the detector's confidence in it (None: it gives none) and, where
    the detector finds them, five landmarks in image pixels: the eye on the image's left, the other eye, the nose
    tip, and the mouth's left and right corners."""

    x: int
    y: int
    w: int
    h: int
    score: float | None = None
    landmarks: tuple[Point, ...] | None = None

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
    """Anything that finds face boxes in a uint8 image, (H, W, 3) RGB or (H, W) grayscale, can be plugged into the
    recognizer. It may say how much to widen its boxes when cropping faces (``crop_margin``, default 0.1)."""

    def __call__(self, image: np.ndarray) -> list[Box]: ...


def downscaled(image: np.ndarray, max_side: int | None) -> tuple[np.ndarray, float]:
    """``image`` shrunk so that its longer side is at most ``max_side`` (None: as it is), and the scale applied."""
    scale = min(1.0, max_side / max(image.shape[:2])) if max_side else 1.0
    if scale < 1.0:  # at least a pixel a side: a 21 × 26,913 upload would otherwise shrink to no rows at all
        size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return image, scale


def as_gray(image: np.ndarray) -> np.ndarray:
    """(H, W) uint8 from (H, W, 3) RGB or (H, W) grayscale."""
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image


def as_rgb(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB from (H, W, 3) RGB or (H, W) grayscale."""
    return image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)


def load_image(image: str | Path | BinaryIO | Image.Image | np.ndarray, name: str | None = None) -> np.ndarray:
    """A uint8 array, (H, W, 3) RGB or (H, W) grayscale, from a path, file object, PIL image or array (BGR/BGRA as
    OpenCV gives), EXIF orientation honoured; an unreadable image raises ``FERDataError`` naming ``name`` (default:
    the path)."""
    if isinstance(image, np.ndarray):
        if image.ndim == 3:
            return cv2.cvtColor(image, cv2.COLOR_BGR2RGB if image.shape[2] == 3 else cv2.COLOR_BGRA2RGB)
        return image.astype(np.uint8, copy=False)
    if isinstance(image, Image.Image):
        check_pixels(image, name or "image")
        return _pixels(image)
    with opened_image(image, name or str(image)) as im:
        check_pixels(im, name or str(image))
        return _pixels(im)


def _pixels(im: Image.Image) -> np.ndarray:
    """Colour images as RGB (what CNN detectors were trained on), the rest as grayscale; EXIF orientation honoured."""
    if im.mode in ("RGB", "RGBA", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    return np.asarray(to_gray(im))


def load_gray(image: str | Path | BinaryIO | Image.Image | np.ndarray, name: str | None = None) -> np.ndarray:
    """``load_image`` as (H, W) uint8 grayscale."""
    return as_gray(load_image(image, name))


def crop(gray: np.ndarray, box: Box, margin: float = 0.1, align: bool = False, max_side: int = 512) -> np.ndarray:
    """The square of the box's longer side, widened by ``margin`` of it on every side, around the box's centre
    (edges repeated where it leaves the image): FER data are square faces, and a tall box squeezed into a square
    face would widen it. With ``align`` and a box with landmarks, turned about its centre so the eyes are level.
    Crops are at most ``max_side`` pixels a side (the classifier sees 48)."""
    side = max(1.0, max(box.w, box.h) * (1 + 2 * margin))
    angle = 0.0
    if align and box.landmarks:
        (lx, ly), (rx, ry) = box.landmarks[:2]
        angle = float(np.degrees(np.arctan2(ry - ly, rx - lx)))
    cx, cy = box.x + box.w / 2, box.y + box.h / 2
    # Only the pixels the turned square can reach, shrunk when larger than needed: OpenCV's warp also refuses
    # images of 32,767 pixels or more a side.
    reach = side * 0.71 + 2
    x0, y0 = max(0, int(cx - reach)), max(0, int(cy - reach))
    patch = gray[y0:min(gray.shape[0], int(cy + reach) + 1), x0:min(gray.shape[1], int(cx + reach) + 1)]
    f = min(1.0, max_side / side, 16_384 / max(patch.shape))
    if f < 1.0:
        size = (max(1, round(patch.shape[1] * f)), max(1, round(patch.shape[0] * f)))
        patch = cv2.resize(patch, size, interpolation=cv2.INTER_AREA)
    centre, out = ((cx - x0) * f, (cy - y0) * f), max(1, round(side * f))
    turn = cv2.getRotationMatrix2D(centre, angle, 1.0)
    turn[:, 2] += (out / 2 - centre[0], out / 2 - centre[1])  # the box's centre to the middle of the output
    return cv2.warpAffine(patch, turn, (out, out), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
