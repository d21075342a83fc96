"""Reading face images from an ImageFolder tree or the Kaggle ``fer2013.csv``, once, into a uint8 cache.

Every image is decoded, converted to grayscale and resized to the model's input size a single
time; the result is kept as one ``uint8`` tensor (FER2013's 36k faces are ~80 MB) and persisted
under a key made of the source files' paths, sizes and modification times, so a changed, added
or removed image is never served from a stale cache.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeVar

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from rich.progress import track

from fer.emotions import ALL_EMOTIONS, FER2013_CSV_ORDER, canonical_emotion
from fer.errors import FERError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}
# Faces are small; anything this large is a decompression bomb or a mistake, not a face crop.
MAX_IMAGE_PIXELS = 64_000_000
CACHE_VERSION = 2
T = TypeVar("T")
CSV_USAGE = {"train": "Training", "validation": "PublicTest", "test": "PrivateTest"}

EXPECTED_LAYOUT = """\
  <data_dir>/
    train/<emotion>/*.png|jpg      (required)
    validation/<emotion>/*         (or val/; optional: else a stratified split of train/)
    test/<emotion>/*               (optional)
  or a Kaggle fer2013.csv (columns emotion,pixels,Usage) given as data_dir or inside it.
  or FER+: FER2013Train/, FER2013Valid/, FER2013Test/ with their label.csv, or fer2013.csv beside fer2013new.csv.
  <emotion> is one of: """ + ", ".join(ALL_EMOTIONS) + (
    " (case-insensitive; aliases such as happiness, sadness accepted)")


class FERDataError(FERError, ValueError):
    """Bad or missing data, with the file or folder and what was expected."""

    kind = "data error"


@dataclass
class FaceTable:
    """Decoded faces of one split: ``images`` (N, H, W) uint8, ``labels`` (N,) int64 indexing ``ALL_EMOTIONS``, and
    where the dataset has them, ``soft`` (N, len(ALL_EMOTIONS)) label distributions (annotators' votes)."""

    images: torch.Tensor
    labels: torch.Tensor
    paths: list[str]
    soft: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor) -> FaceTable:
        soft = None if self.soft is None else self.soft[index]
        return FaceTable(self.images[index], self.labels[index], [self.paths[i] for i in index.tolist()], soft)


@contextmanager
def opened_image(source: str | Path | BinaryIO, name: str) -> Iterator[Image.Image]:
    """The PIL image of a path or file object; any decoding failure, inside the ``with`` block too (PIL
    decodes lazily), raises :class:`FERDataError` naming ``name``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as im:
                yield im
    except FERDataError:
        raise
    except UnidentifiedImageError as e:
        raise FERDataError(f"{name}: not an image file PIL can read") from e
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombWarning,
            Image.DecompressionBombError) as e:
        raise FERDataError(f"{name}: corrupt or truncated image ({e})") from e


def read_image(path: str | Path, image_size: int) -> np.ndarray:
    """Decode any image file into an (image_size, image_size) uint8 grayscale array.

    EXIF orientation is honoured, 16-bit and float images are rescaled rather than clipped,
    and every failure raises :class:`FERDataError` naming the file.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as e:
        raise FERDataError(f"{path}: cannot be read ({e.strerror})") from e
    if size == 0:
        raise FERDataError(f"{path}: file is empty (0 bytes); expected an image")
    with opened_image(path, str(path)) as im:
        return image_to_array(im, image_size, str(path))


def check_pixels(im: Image.Image, name: str) -> None:
    if im.width * im.height > MAX_IMAGE_PIXELS:
        raise FERDataError(f"{name}: {im.width}x{im.height} pixels is over the {MAX_IMAGE_PIXELS:,} limit")


def to_gray(im: Image.Image) -> Image.Image:
    """Mode "L" of any image, EXIF orientation honoured; 16-bit and float images rescaled, not clipped."""
    im = ImageOps.exif_transpose(im)
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        arr = np.asarray(im, dtype=np.float32)
        peak = 65535.0 if arr.max() > 255 else 255.0
        im = Image.fromarray((arr.clip(0, peak) * (255.0 / peak)).astype(np.uint8))
    return im.convert("L")


def image_to_array(im: Image.Image, image_size: int, name: str = "image") -> np.ndarray:
    """Grayscale (image_size, image_size) uint8 array from an opened PIL image."""
    check_pixels(im, name)
    im.draft("L", (image_size, image_size))  # JPEG: decode at reduced scale, much faster for big photos
    im = to_gray(im)
    if im.size != (image_size, image_size):
        im = im.resize((image_size, image_size), Image.Resampling.BILINEAR)
    return np.asarray(im, dtype=np.uint8)


def image_files(paths: Sequence[Path]) -> list[Path]:
    """The image files named, and those found (recursively, hidden ones left out) in the folders named."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(
                p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
            )
        elif path.is_file():
            files.append(path)
        else:
            raise FERDataError(f"{path}: no such file or folder")
    return files


def list_split(split_dir: Path, emotions: Sequence[str]) -> list[tuple[Path, int]]:
    """Image files of a ``<split>/<emotion>/*`` folder with their ``ALL_EMOTIONS`` index.

    Folders of known emotions outside ``emotions`` are left out; unknown folders are an error.
    """
    if not split_dir.is_dir():
        raise FERDataError(f"{split_dir}: folder not found. Expected layout:\n{EXPECTED_LAYOUT}")
    files: list[tuple[Path, int]] = []
    ignored = 0
    for entry in sorted(split_dir.iterdir()):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            ignored += 1
            continue
        emotion = canonical_emotion(entry.name)
        if emotion is None:
            raise FERDataError(
                f"{entry}: unknown emotion folder {entry.name!r}; expected one of {list(ALL_EMOTIONS)} "
                "(case-insensitive, aliases such as 'happiness' or 'surprised' accepted)"
            )
        if emotion not in emotions:
            log.info("Leaving out %s: %r is not among the configured emotions", entry, emotion)
            continue
        for root, dirs, names in os.walk(entry):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(names):
                if name.startswith("."):
                    continue
                if Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                    files.append((Path(root) / name, ALL_EMOTIONS.index(emotion)))
                else:
                    ignored += 1
    if ignored:
        log.warning("%s: ignored %d entries that are not image files in emotion folders", split_dir, ignored)
    if not files:
        raise FERDataError(
            f"{split_dir}: split is empty: no images of {list(emotions)} found. Expected layout:\n{EXPECTED_LAYOUT}"
        )
    return files


def _cache_path(cache_dir: Path, source: Path, key_parts: list[str], image_size: int) -> Path:
    digest = hashlib.sha1("\n".join([str(CACHE_VERSION), str(image_size), *key_parts]).encode()).hexdigest()
    where = hashlib.sha1(str(source.resolve()).encode()).hexdigest()[:12]
    return cache_dir / f"{where}-{image_size}-{digest[:16]}.pt"


def _load_cached(path: Path | None) -> dict | None:
    if path is None or not path.is_file():
        return None
    try:
        return torch.load(path, weights_only=True)
    except Exception as e:  # noqa: BLE001 (a corrupt cache, however it fails, is only a lost speed-up: rebuild it)
        log.warning("Ignoring unreadable cache %s (%s); decoding the images again", path, e)
        return None


def _store_cache(path: Path | None, payload: dict) -> None:
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.glob(path.name.rsplit("-", 1)[0] + "-*.pt"):
            stale.unlink(missing_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except OSError as e:
        log.warning("Could not write the image cache %s (%s); images will be decoded again next time", path, e)


def decode_cached(items: Sequence[T], decode: Callable[[T], np.ndarray], source: Path, key: list[str],
                  image_size: int, cache_dir: Path | None, skip_bad_files: bool) -> tuple[torch.Tensor, list[int]]:
    """Decode each item with a progress bar, or load the result from the cache under ``key``: (N, S, S) uint8
    images and the indices of the items they are. An item ``decode`` fails on (``FERDataError``) stops the
    loading, or with ``skip_bad_files`` is skipped and counted."""
    cache = _cache_path(cache_dir, source, key, image_size) if cache_dir else None
    payload = _load_cached(cache)
    if payload is None:
        images, kept, bad = [], [], []
        for i, item in enumerate(track(items, description=f"Decoding {source.name}", transient=True)):
            try:
                images.append(decode(item))
            except FERDataError as e:
                if not skip_bad_files:
                    raise FERDataError(f"{e}\n(set `data.skip_bad_files: true` to skip unreadable images)") from e
                bad.append(str(e))
                continue
            kept.append(i)
        if not kept:
            raise FERDataError(f"{source}: no readable images left after skipping {len(bad)}")
        payload = {"images": torch.from_numpy(np.stack(images)), "kept": torch.tensor(kept), "bad": bad}
        _store_cache(cache, payload)
    if payload["bad"]:
        log.warning("%s: skipped %d unreadable images, e.g. %s", source, len(payload["bad"]), payload["bad"][0])
    return payload["images"], payload["kept"].tolist()


def load_folder_split(
    split_dir: Path,
    emotions: Sequence[str],
    image_size: int,
    cache_dir: Path | None = None,
    skip_bad_files: bool = False,
) -> FaceTable:
    """Decode (or load from cache) every image of a ``<split>/<emotion>/*`` folder."""
    files = list_split(split_dir, emotions)
    key = []
    for path, label in files:
        st = path.stat()
        key.append(f"{path.relative_to(split_dir)}\t{label}\t{st.st_size}\t{st.st_mtime_ns}")
    images, kept = decode_cached(files, lambda file: read_image(file[0], image_size), split_dir, key, image_size,
                                 cache_dir, skip_bad_files)
    return FaceTable(images, torch.tensor([files[i][1] for i in kept]), [str(files[i][0]) for i in kept])


def _read_csv_rows(csv_path: Path):
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"emotion", "pixels", "Usage"} - set(reader.fieldnames or [])
        if missing:
            raise FERDataError(f"{csv_path}: missing columns {sorted(missing)}; expected emotion,pixels,Usage")
        yield from enumerate(reader, start=2)


def _parse_row(csv_path: Path, line: int, row: dict[str, str]) -> tuple[str, np.ndarray]:
    try:
        emotion = FER2013_CSV_ORDER[int(row["emotion"])]
        pixels = np.array(row["pixels"].split(), dtype=np.uint8)
        side = round(len(pixels) ** 0.5)
        return emotion, pixels.reshape(side, side)
    except (ValueError, IndexError) as e:
        raise FERDataError(f"{csv_path}:{line}: bad row ({e}); expected emotion 0-6 and a square of pixels") from e


def load_csv_split(
    csv_path: Path, split: str, emotions: Sequence[str], image_size: int, cache_dir: Path | None = None
) -> FaceTable:
    """Faces of one split (train / validation / test) of a Kaggle ``fer2013.csv``."""
    st = csv_path.stat()
    keys = [f"csv\t{split}\t{','.join(emotions)}\t{st.st_size}\t{st.st_mtime_ns}"]
    source = csv_path.with_name(f"{csv_path.name}:{split}")
    cache = _cache_path(cache_dir, source, keys, image_size) if cache_dir else None
    payload = _load_cached(cache)
    if payload is None:
        images, labels, paths = [], [], []
        for line, row in _read_csv_rows(csv_path):
            if row["Usage"] != CSV_USAGE[split]:
                continue
            emotion, face = _parse_row(csv_path, line, row)
            if emotion not in emotions:
                continue
            if face.shape[0] != image_size:
                face = np.asarray(Image.fromarray(face).resize((image_size, image_size), Image.Resampling.BILINEAR))
            images.append(face)
            labels.append(ALL_EMOTIONS.index(emotion))
            paths.append(f"{csv_path}:{line}")
        if not images:
            raise FERDataError(f"{csv_path}: no rows with Usage={CSV_USAGE[split]} for emotions {list(emotions)}")
        payload = {
            "images": torch.from_numpy(np.stack(images)),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "paths": paths,
            "bad": [],
        }
        _store_cache(cache, payload)
    return FaceTable(payload["images"], payload["labels"], payload["paths"])


def csv_has_split(csv_path: Path, split: str) -> bool:
    return any(row["Usage"] == CSV_USAGE[split] for _, row in _read_csv_rows(csv_path))


def convert_csv(csv_path: Path, out_dir: Path) -> dict[str, int]:
    """Write a Kaggle ``fer2013.csv`` as a ``{train,validation,test}/<emotion>/*.png`` tree; returns counts per
    split."""
    usage_to_split = {usage: split for split, usage in CSV_USAGE.items()}
    counts: dict[str, int] = {}
    for line, row in track(list(_read_csv_rows(csv_path)), description="Writing PNGs"):
        split = usage_to_split.get(row["Usage"])
        if split is None:
            raise FERDataError(f"{csv_path}:{line}: unknown Usage {row['Usage']!r}; "
                               f"expected one of {list(usage_to_split)}")
        emotion, face = _parse_row(csv_path, line, row)
        folder = out_dir / split / emotion
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(face).save(folder / f"{split}_{line - 1:05d}.png")
        counts[split] = counts.get(split, 0) + 1
    return counts
