"""Datasets whose label files list their images: RAF-DB (basic) and AffectNet (manual annotations), and the decoding
they share with FER+'s ``label.csv``.

- RAF-DB: ``EmoLabel/list_patition_label.txt`` (lines such as ``train_00001.jpg 5``); images in ``Image/aligned/``
  (``train_00001_aligned.jpg``) or ``Image/original/``; the split is the name's ``train_``/``test_`` prefix.
- AffectNet: ``training.csv`` and ``validation.csv`` (``subDirectory_filePath, face_x, face_y, face_width,
  face_height, facial_landmarks, expression, valence, arousal``); images under ``Manually_Annotated_Images/`` (or
  beside the files); faces cropped by their boxes; expressions 8-10 (none, uncertain, not a face) skipped, counted.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from fer.data.reading import FaceTable, FERDataError, decode_cached, image_to_array, opened_image
from fer.emotions import ALL_EMOTIONS

log = logging.getLogger(__name__)

RAFDB_LABELS = "EmoLabel/list_patition_label.txt"
RAFDB_CODES = {1: "surprise", 2: "fear", 3: "disgust", 4: "happy", 5: "sad", 6: "angry", 7: "neutral"}
AFFECTNET_FILES = {"train": "training.csv", "validation": "validation.csv"}
AFFECTNET_CODES = {0: "neutral", 1: "happy", 2: "sad", 3: "surprise", 4: "fear", 5: "disgust", 6: "angry",
                   7: "contempt"}
AFFECTNET_SKIPPED = {8: "none", 9: "uncertain", 10: "not a face"}


@dataclass(frozen=True)
class ListedFace:
    """One face a label file lists: its image, a value to carry (a label index, or a row of votes), the label
    file's line, and the face's box in the image (None: the whole image)."""

    path: Path
    value: object
    where: str
    box: tuple[int, int, int, int] | None = None


class BadRows:
    """A label file's bad rows: raised at once, or with ``skip_bad_files`` counted, logged and skipped."""

    def __init__(self, source: Path, skip: bool) -> None:
        self.source, self.skip, self.errors = source, skip, []

    def __call__(self, error: FERDataError) -> None:
        if not self.skip:
            raise FERDataError(f"{error}\n(set `data.skip_bad_files: true` to skip such rows)") from error
        self.errors.append(str(error))

    def report(self) -> None:
        if self.errors:
            log.warning("%s: skipped %d bad rows, e.g. %s", self.source, len(self.errors), self.errors[0])


def decode_listed(faces: list[ListedFace], source: Path, image_size: int, cache_dir: Path | None,
                  skip_bad_files: bool) -> tuple[torch.Tensor, list[int], list[str]]:
    """Decode (or load from the cache) the faces a label file lists: (N, S, S) uint8 images, the indices into
    ``faces`` of those decoded, and their paths. A missing or unreadable image, or a box outside its image, stops
    with the label file's line, or with ``skip_bad_files`` is skipped and counted."""
    key = ["listed", *(f"{f.path}\t{f.box}\t{_stamp(f.path)}" for f in faces)]
    images, kept = decode_cached(faces, partial(_decode, image_size=image_size), source, key, image_size, cache_dir,
                                 skip_bad_files)
    return images, kept, [str(faces[i].path) for i in kept]


def _stamp(path: Path) -> str:
    """Size and modification time, as the folder cache keys its files: a changed image is never served stale."""
    if not path.is_file():
        return "missing"
    st = path.stat()
    return f"{st.st_size}\t{st.st_mtime_ns}"


def _decode(face: ListedFace, image_size: int) -> np.ndarray:
    if not face.path.is_file():
        raise FERDataError(f"{face.where}: references {face.path.name}, which is not in {face.path.parent}")
    with opened_image(face.path, str(face.path)) as im:
        if face.box is not None:
            x, y, w, h = face.box
            if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > im.width or y + h > im.height:
                raise FERDataError(f"{face.where}: face box {list(face.box)} is outside {face.path.name} "
                                   f"({im.width}x{im.height})")
            im = im.crop((x, y, x + w, y + h))
        return image_to_array(im, image_size, str(face.path))


def _table(faces: list[ListedFace], source: Path, emotions: list[str], image_size: int, cache_dir: Path | None,
           skip_bad_files: bool) -> FaceTable:
    faces = [f for f in faces if ALL_EMOTIONS[f.value] in emotions]
    if not faces:
        raise FERDataError(f"{source}: no faces of {emotions}")
    images, kept, paths = decode_listed(faces, source, image_size, cache_dir, skip_bad_files)
    return FaceTable(images, torch.tensor([faces[i].value for i in kept]), paths)


def is_rafdb(root: Path) -> bool:
    return (root / RAFDB_LABELS).is_file()


def load_rafdb_split(root: Path, split: str, emotions: list[str], image_size: int, cache_dir: Path | None = None,
                     skip_bad_files: bool = False) -> FaceTable | None:
    """RAF-DB's ``train`` or ``test`` faces (it has no validation split: None)."""
    if split == "validation":
        return None
    labels = root / RAFDB_LABELS
    aligned = (root / "Image" / "aligned").is_dir()
    faces, bad = [], BadRows(labels, skip_bad_files)
    for line, text in enumerate(labels.read_text().splitlines(), start=1):
        if not text.strip():
            continue
        where = f"{labels}:{line}"
        parts = text.split()
        if len(parts) != 2 or not parts[1].isdigit() or int(parts[1]) not in RAFDB_CODES:
            bad(FERDataError(f"{where}: expected '<name>.jpg <code>' with a code 1-7 "
                             f"({', '.join(f'{k} {v}' for k, v in RAFDB_CODES.items())}), got {text!r}"))
            continue
        name, code = parts[0], int(parts[1])
        if not name.startswith(f"{split}_"):
            continue
        stem, suffix = name.rsplit(".", 1)
        file = f"{stem}_aligned.{suffix}" if aligned else name
        path = root / "Image" / ("aligned" if aligned else "original") / file
        faces.append(ListedFace(path, ALL_EMOTIONS.index(RAFDB_CODES[code]), where))
    bad.report()
    return _table(faces, labels, emotions, image_size, cache_dir, skip_bad_files)


def is_affectnet(root: Path) -> bool:
    return any((root / name).is_file() for name in AFFECTNET_FILES.values())


def load_affectnet_split(root: Path, split: str, emotions: list[str], image_size: int,
                         cache_dir: Path | None = None, skip_bad_files: bool = False) -> FaceTable | None:
    """AffectNet's manually annotated ``train`` (training.csv) or ``validation`` faces, cropped by their boxes."""
    if split not in AFFECTNET_FILES:
        return None
    labels = root / AFFECTNET_FILES[split]
    if not labels.is_file():
        return None
    images = root / "Manually_Annotated_Images"
    images = images if images.is_dir() else root
    faces, skipped, bad = [], dict.fromkeys(AFFECTNET_SKIPPED.values(), 0), BadRows(labels, skip_bad_files)
    with open(labels, newline="") as f:
        for line, row in enumerate(csv.DictReader(f), start=2):
            where = f"{labels}:{line}"
            try:
                code = int(row["expression"])
                box = tuple(int(float(row[k])) for k in ("face_x", "face_y", "face_width", "face_height"))
            except (KeyError, TypeError, ValueError) as e:
                bad(FERDataError(f"{where}: malformed row ({e!r}); expected the columns subDirectory_filePath, "
                                 "face_x, face_y, face_width, face_height, facial_landmarks, expression, …"))
                continue
            if code in AFFECTNET_SKIPPED:
                skipped[AFFECTNET_SKIPPED[code]] += 1
                continue
            if code not in AFFECTNET_CODES:
                bad(FERDataError(f"{where}: unknown expression code {code}; expected 0-10"))
                continue
            faces.append(ListedFace(images / row["subDirectory_filePath"], ALL_EMOTIONS.index(AFFECTNET_CODES[code]),
                                    where, box))
    bad.report()
    if any(skipped.values()):
        log.info("%s: skipped %s", labels, ", ".join(f"{n} {k}" for k, n in skipped.items() if n))
    return _table(faces, labels, emotions, image_size, cache_dir, skip_bad_files)
