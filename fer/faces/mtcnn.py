"""MTCNN (Zhang et al., "Joint Face Detection and Alignment using Multi-task Cascaded Convolutional Networks", IEEE
SPL 2016) in PyTorch: three small networks, a proposal net run over an image pyramid, then two that refine and
score its candidates; the last also places five landmarks.

The weights are those the ``mtcnn`` wheel ships (MIT licence, installed with fer): read from its files, without
importing that package (it needs TensorFlow), so nothing is downloaded. ``weights_dir`` takes a folder holding
``pnet.lz4``, ``rnet.lz4`` and ``onet.lz4`` instead.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn
from torchvision.ops import nms, roi_align

from fer.errors import ConfigError
from fer.faces.base import Box, as_rgb, downscaled

WEIGHT_FILES = ("pnet.lz4", "rnet.lz4", "onet.lz4")


def _conv(in_chans: int, out_chans: int, kernel: int) -> list[nn.Module]:
    return [nn.Conv2d(in_chans, out_chans, kernel), nn.PReLU(out_chans)]


class _Flatten(nn.Module):
    """Flattens (N, C, H, W) in the (W, H, C) order the dense layers' weights were trained on."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 3, 2, 1).flatten(1)


class PNet(nn.Module):
    """Proposal net: fully convolutional, a 12-px window every 2 px; face probability and box offsets."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(*_conv(3, 10, 3), nn.MaxPool2d(2, 2, ceil_mode=True), *_conv(10, 16, 3),
                                  *_conv(16, 32, 3))
        self.box, self.face = nn.Conv2d(32, 4, 1), nn.Conv2d(32, 2, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = self.body(x)
        return self.box(x), self.face(x).softmax(1)[:, 1]


class RNet(nn.Module):
    """Refinement net on 24-px crops: face probability and box offsets."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(*_conv(3, 28, 3), nn.MaxPool2d(3, 2, ceil_mode=True), *_conv(28, 48, 3),
                                  nn.MaxPool2d(3, 2), *_conv(48, 64, 2), _Flatten(), nn.Linear(576, 128),
                                  nn.PReLU(128))
        self.box, self.face = nn.Linear(128, 4), nn.Linear(128, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = self.body(x)
        return self.box(x), self.face(x).softmax(1)[:, 1]


class ONet(nn.Module):
    """Output net on 48-px crops: face probability, box offsets and five landmarks."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(*_conv(3, 32, 3), nn.MaxPool2d(3, 2, ceil_mode=True), *_conv(32, 64, 3),
                                  nn.MaxPool2d(3, 2), *_conv(64, 64, 3), nn.MaxPool2d(2, 2, ceil_mode=True),
                                  *_conv(64, 128, 2), _Flatten(), nn.Linear(1152, 256), nn.PReLU(256))
        self.box, self.landmarks, self.face = nn.Linear(256, 4), nn.Linear(256, 10), nn.Linear(256, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = self.body(x)
        return self.box(x), self.landmarks(x), self.face(x).softmax(1)[:, 1]


def default_weights_dir() -> Path:
    """The weights folder of the installed ``mtcnn`` wheel (found without importing it)."""
    spec = importlib.util.find_spec("mtcnn")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("detector 'mtcnn' needs the mtcnn package's weights: pip install mtcnn (a dependency of "
                          "fer; no TensorFlow needed), or pass weights_dir / --detector-model with pnet.lz4, "
                          "rnet.lz4 and onet.lz4")
    return Path(next(iter(spec.submodule_search_locations))) / "assets" / "weights"


def load_weights(net: nn.Module, path: Path) -> nn.Module:
    """Fill ``net`` with the arrays in ``path`` (a joblib/lz4 list in Keras order: per layer kernel, bias, PReLU)."""
    import joblib  # mtcnn's own dependency: installed beside it

    arrays = [torch.from_numpy(np.asarray(a, dtype=np.float32)) for a in joblib.load(path)]
    params = [p for p in net.parameters()]  # body in order, then the heads in their declaration order
    if len(arrays) != len(params):
        raise ConfigError(f"{path}: {len(arrays)} arrays, {type(net).__name__} has {len(params)} parameters")
    with torch.no_grad():
        for param, array in zip(params, arrays):
            if array.ndim == 4:  # Keras (kh, kw, in, out) -> PyTorch (out, in, kh, kw)
                array = array.permute(3, 2, 0, 1)
            elif array.ndim == 2:  # Keras (in, out) -> PyTorch (out, in)
                array = array.t()
            param.copy_(array.reshape(param.shape))
    return net.eval()


def _normalized(rgb: np.ndarray) -> torch.Tensor:
    """(1, 3, H, W) float input, scaled as the nets were trained: (pixel - 127.5) / 128."""
    return (torch.tensor(rgb).permute(2, 0, 1)[None].float() - 127.5) / 128


def _square(boxes: torch.Tensor) -> torch.Tensor:
    """(K, 4) x1, y1, x2, y2 boxes as squares of their longer side around the same centre."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]).max(1, keepdim=True).values / 2
    return torch.cat([centre - half, centre + half], 1)


def _refine(boxes: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Apply the nets' box offsets (fractions of the box's side) to (K, 4) boxes."""
    side = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
    return boxes + offsets * side


class MTCNNFaceDetector:
    """MTCNN with the classic settings: a pyramid step of 0.709 and thresholds 0.6, 0.7 and ``threshold`` for the
    three nets. ``min_size``: the smallest face searched for, in the image's pixels. Images whose longer side exceeds
    ``max_side`` are searched downscaled (boxes come back in the original's pixels). Boxes carry the final net's
    probability as ``score`` and five landmarks. Its boxes run from the hairline to the chin: the square of their
    longer side frames a face as FER2013 does (``crop_margin`` 0 classified FER2013 faces found this way best:
    docs/inference.md).
    """

    crop_margin = 0.0

    def __init__(self, min_size: int = 20, threshold: float = 0.8, max_side: int | None = 1280,
                 weights_dir: str | Path | None = None) -> None:
        folder = Path(weights_dir) if weights_dir else default_weights_dir()
        missing = [name for name in WEIGHT_FILES if not (folder / name).is_file()]
        if missing:
            raise ConfigError(f"detector 'mtcnn': {folder} has no {', '.join(missing)}; expected the mtcnn wheel's "
                              f"weight files {', '.join(WEIGHT_FILES)}")
        self.pnet, self.rnet, self.onet = (load_weights(net, folder / name)
                                           for net, name in zip((PNet(), RNet(), ONet()), WEIGHT_FILES))
        self.min_size, self.threshold, self.max_side = min_size, threshold, max_side
        self.thresholds = (0.6, 0.7)  # proposal and refinement nets: recall first, the output net decides

    @torch.inference_mode()
    def __call__(self, image: np.ndarray) -> list[Box]:
        rgb, scale = downscaled(as_rgb(image), self.max_side)
        x = _normalized(rgb)
        boxes = self._propose(rgb, max(12.0, self.min_size * scale))
        if len(boxes):
            boxes = self._stage(self.rnet, x, boxes, 24, self.thresholds[1])
        if len(boxes):
            boxes = self._stage(self.onet, x, boxes, 48, self.threshold)
        faces = []
        for b in boxes.tolist():
            x1, y1, x2, y2 = (v / scale for v in b[:4])
            points = tuple((px / scale, py / scale) for px, py in zip(b[5:10], b[10:15]))
            faces.append(Box(round(x1), round(y1), round(x2 - x1), round(y2 - y1), round(b[4], 4), points))
        return faces

    def _propose(self, rgb: np.ndarray, min_size: float) -> torch.Tensor:
        """Candidate squares (K, 5: x1, y1, x2, y2, probability) from the proposal net over an image pyramid."""
        height, width = rgb.shape[:2]
        found = []
        scale = 12.0 / min_size
        while min(height, width) * scale >= 12:
            size = (max(12, int(np.ceil(width * scale))), max(12, int(np.ceil(height * scale))))
            level = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
            level = _normalized(level)
            offsets, prob = self.pnet(level)
            ys, xs = torch.nonzero(prob[0] >= self.thresholds[0], as_tuple=True)
            if len(ys):
                corner = torch.stack([xs, ys], 1).float() * 2
                boxes = torch.cat([corner, corner + 12], 1) / scale
                boxes = _refine(boxes, offsets[0, :, ys, xs].t())
                scores = prob[0, ys, xs]
                keep = nms(boxes, scores, 0.5)
                found.append(torch.cat([boxes[keep], scores[keep, None]], 1))
            scale *= 0.709
        if not found:
            return torch.zeros(0, 5)
        boxes = torch.cat(found)
        boxes = boxes[nms(boxes[:, :4], boxes[:, 4], 0.7)]
        return torch.cat([_square(boxes[:, :4]), boxes[:, 4:]], 1)

    def _stage(self, net: nn.Module, x: torch.Tensor, boxes: torch.Tensor, side: int,
               threshold: float) -> torch.Tensor:
        """Score and refine candidate squares with ``net`` on ``side``-px crops; the output net adds landmarks."""
        crops = roi_align(x, [boxes[:, :4]], output_size=side, sampling_ratio=2, aligned=True)
        out = net(crops)
        keep = out[-1] >= threshold
        boxes, out = boxes[keep], [o[keep] for o in out]
        if not len(boxes):
            return torch.zeros(0, 5)
        refined = _refine(boxes[:, :4], out[0])
        scores = out[-1]
        if net is self.onet:
            side_px = (boxes[:, 2:4] - boxes[:, :2]).repeat(1, 5)
            points = boxes[:, [0] * 5 + [1] * 5] + out[1] * side_px[:, [0, 2, 4, 6, 8, 1, 3, 5, 7, 9]]
            keep = nms(refined, scores, 0.7)
            return torch.cat([refined, scores[:, None], points], 1)[keep]
        keep = nms(refined, scores, 0.7)
        return torch.cat([_square(refined[keep]), scores[keep, None]], 1)
