"""Procedural 48×48 grayscale faces for all seven emotions: built-in data for the quickstart and tests.

Each emotion sets the mean of a few facial parameters (mouth curvature, opening and width, eye
opening, brow height and slant, a one-sided sneer); every face draws its own values around those
means and then gets a random pose, scale, position, lighting, blur and noise, so the classes overlap
a little and a model has to look at the face rather than at a single pixel.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from fer.emotions import EMOTIONS

RENDER = 96  # drawn at twice the output size, then downsampled for smooth edges
SPLIT_SIZES = {"train": 1.0, "validation": 0.25, "test": 0.25}

# curve (+ corners up), mouth open, mouth width, eye open, brow height, brow slant (+ inner end up), sneer
PROFILES: dict[str, tuple[float, ...]] = {
    "angry": (-0.25, 0.1, 0.85, 0.6, -0.7, -0.9, 0.0),
    "disgust": (-0.35, 0.15, 0.8, 0.55, -0.35, -0.35, 0.9),
    "fear": (-0.3, 0.55, 1.1, 1.35, 0.65, 0.7, 0.0),
    "happy": (0.9, 0.35, 1.1, 0.8, 0.1, 0.0, 0.0),
    "neutral": (0.0, 0.0, 0.9, 1.0, 0.0, 0.0, 0.0),
    "sad": (-0.85, 0.05, 0.8, 0.7, 0.15, 0.9, 0.0),
    "surprise": (0.0, 1.0, 0.6, 1.5, 1.0, 0.2, 0.0),
}


def cache_root() -> Path:
    """Where the project keeps generated data and decoded-image caches (``$FER_CACHE_DIR`` overrides)."""
    return Path(os.environ.get("FER_CACHE_DIR", Path.home() / ".cache" / "fer"))


def render_face(emotion: str, rng: np.random.Generator, size: int = 48, difficulty: float = 1.0) -> np.ndarray:
    """One synthetic face as a (size, size) uint8 array; ``difficulty`` scales every random variation."""
    k = difficulty
    curve, mouth_open, width, eye_open, brow_h, brow_slant, sneer = (
        v + rng.normal(0, 0.18 * k) for v in PROFILES[emotion]
    )
    mouth_open, width, eye_open = max(mouth_open, 0.0), float(np.clip(width, 0.4, 1.4)), max(eye_open, 0.15)
    s = RENDER
    bg, skin = rng.uniform(10, 110), rng.uniform(120, 220)
    if rng.random() < 0.5:
        bg = rng.uniform(140, 250)
    im = Image.new("L", (s, s), int(bg))
    d = ImageDraw.Draw(im)
    cx, cy = s / 2, s / 2
    fw, fh = s * rng.uniform(0.36, 0.42), s * rng.uniform(0.44, 0.5)
    d.ellipse([cx - fw, cy - fh, cx + fw, cy + fh], fill=int(skin))
    dark = int(max(skin - rng.uniform(80, 120), 0))

    eye_y, eye_dx = cy - fh * 0.22, fw * 0.42
    for side in (-1, 1):
        ex = cx + side * eye_dx
        ew, eh = fw * 0.2, fw * 0.09 * eye_open
        d.ellipse([ex - ew, eye_y - eh, ex + ew, eye_y + eh], fill=min(int(skin + 30), 255))
        pr = min(ew, eh) * 0.9
        d.ellipse([ex - pr, eye_y - pr, ex + pr, eye_y + pr], fill=dark)
        by = eye_y - fw * (0.22 + 0.12 * brow_h)
        inner, outer = ex - side * ew * 1.1, ex + side * ew * 1.1
        d.line([(outer, by), (inner, by - fw * 0.1 * brow_slant)], fill=dark, width=max(2, int(s * 0.035)))

    d.line([(cx, cy - fh * 0.05), (cx - fw * 0.08, cy + fh * 0.18)], fill=dark, width=2)
    if sneer > 0.4:  # nose wrinkle of disgust
        d.line([(cx - fw * 0.2, cy + fh * 0.08), (cx - fw * 0.08, cy + fh * 0.02)], fill=dark, width=2)

    my, mw = cy + fh * 0.5, fw * 0.45 * width
    ts = np.linspace(-1, 1, 21)
    lift = curve * fh * 0.14 * ts**2
    raised = sneer * fh * 0.08 * np.clip(-ts, 0, 1)
    upper = my - lift - mouth_open * fh * 0.05 * (1 - ts**2) - raised
    lower = my - lift + mouth_open * fh * 0.22 * (1 - ts**2)
    xs = cx + mw * ts
    if mouth_open > 0.12:
        d.polygon(list(zip(xs, upper)) + list(zip(xs[::-1], lower[::-1])), fill=dark)
    else:
        d.line(list(zip(xs, upper)), fill=dark, width=max(2, int(s * 0.03)))

    im = im.rotate(rng.uniform(-15, 15) * k, resample=Image.Resampling.BILINEAR, fillcolor=int(bg))
    scale = 1 + rng.uniform(-0.15, 0.12) * k
    shift = rng.uniform(-0.07, 0.07, size=2) * s * k
    crop = s / scale
    x0, y0 = (s - crop) / 2 + shift[0], (s - crop) / 2 + shift[1]
    im = im.transform((size, size), Image.Transform.EXTENT, (x0, y0, x0 + crop, y0 + crop), Image.Resampling.BILINEAR)
    im = im.filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 0.8) * k))

    arr = np.asarray(im, dtype=np.float32)
    gx, gy = np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size))
    arr = arr * (1 + rng.uniform(-0.4, 0.2) * k) + rng.uniform(-40, 40) * k * (gx * rng.normal() + gy * rng.normal())
    arr += rng.normal(0, rng.uniform(2, 14) * k, arr.shape)
    return np.clip(arr, 0, 255).astype(np.uint8)


def make_synthetic_dataset(
    root: Path | None = None, samples_per_class: int = 300, seed: int = 0, image_size: int = 48,
    difficulty: float = 1.0,
) -> Path:
    """Write (once) a seeded ``{train,validation,test}/<emotion>/*.png`` tree of synthetic faces; return its root.

    ``samples_per_class`` is the train size; validation and test get a quarter of it each.
    """
    root = root or cache_root() / f"synthetic-v2-n{samples_per_class}-s{seed}-d{difficulty}-{image_size}px"
    if (root / ".complete").exists():
        return root
    tmp = root.with_name(root.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    for split_index, (split, fraction) in enumerate(SPLIT_SIZES.items()):
        for label, emotion in enumerate(EMOTIONS):
            rng = np.random.default_rng([seed, split_index, label])
            folder = tmp / split / emotion
            folder.mkdir(parents=True)
            for i in range(max(1, round(samples_per_class * fraction))):
                Image.fromarray(render_face(emotion, rng, image_size, difficulty)).save(folder / f"{i:05d}.png")
    (tmp / ".complete").touch()
    if (root / ".complete").exists():  # another process finished first
        shutil.rmtree(tmp)
        return root
    shutil.rmtree(root, ignore_errors=True)  # a partial tree left by a crash
    tmp.rename(root)
    return root
