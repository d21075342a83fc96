"""FER+ (Barsoum et al., ICMI 2016): FER2013's faces relabelled by 10 annotators each, read as Microsoft releases it.

Either image folders ``FER2013Train/``, ``FER2013Valid/``, ``FER2013Test/``, each with ``fer*.png`` and a headerless
``label.csv`` (file name, face box, then the votes), or Kaggle's ``fer2013.csv`` beside Microsoft's
``fer2013new.csv``, whose rows match it row for row (``Usage``, image name, the votes). The votes are for neutral,
happiness, surprise, sadness, anger, disgust, fear, contempt, unknown and not-a-face.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image

from fer.data.listed import BadRows, ListedFace, decode_listed
from fer.data.reading import CSV_USAGE, FaceTable, FERDataError, _parse_row, _read_csv_rows
from fer.emotions import ALL_EMOTIONS

log = logging.getLogger(__name__)
LabelMode = Literal["majority", "probability"]
VOTE_COLUMNS = ("neutral", "happy", "surprise", "sad", "angry", "disgust", "fear", "contempt", "unknown", "not_a_face")
FOLDERS = {"train": "FER2013Train", "validation": "FER2013Valid", "test": "FER2013Test"}
LABEL_FILE = "label.csv"
VOTES_CSV = "fer2013new.csv"
# The votes' emotion columns in ALL_EMOTIONS order
_TO_CANONICAL = [VOTE_COLUMNS.index(e) for e in ALL_EMOTIONS]


def is_ferplus(root: Path) -> bool:
    """``root`` holds FER+ folders with label files, or a fer2013.csv with Microsoft's fer2013new.csv beside it."""
    return any((root / f / LABEL_FILE).is_file() for f in FOLDERS.values()) or (
        (root / VOTES_CSV).is_file() and (root / "fer2013.csv").is_file())


def has_split(root: Path, split: str) -> bool:
    if (root / VOTES_CSV).is_file():
        return any(row.get("Usage") == CSV_USAGE[split] for _, row in _vote_rows(root / VOTES_CSV))
    return (root / FOLDERS[split] / LABEL_FILE).is_file()


def labels_from_votes(votes: np.ndarray, mode: LabelMode) -> tuple[np.ndarray, np.ndarray]:
    """The reference rules on (N, 10) vote counts: single votes are dropped as outliers, then ``majority`` keeps a face
    whose top emotion has more than half of the remaining votes, and ``probability`` keeps a face whose top answer is
    an emotion (not unknown or not-a-face). Returns the kept rows' mask and (N, 8) label distributions over
    ``ALL_EMOTIONS`` (one-hot for ``majority``), zero for rows not kept."""
    votes = np.where(votes == 1, 0, votes).astype(np.float64)
    total = votes.sum(1)
    top = votes.argmax(1)
    is_emotion = top < VOTE_COLUMNS.index("unknown")
    if mode == "majority":
        keep = is_emotion & (votes.max(1) > total / 2)
        soft = np.eye(len(VOTE_COLUMNS))[top][:, _TO_CANONICAL]
    else:
        emotion_votes = votes[:, _TO_CANONICAL]
        keep = is_emotion & (emotion_votes.sum(1) > 0)
        soft = emotion_votes / np.maximum(emotion_votes.sum(1, keepdims=True), 1)
    return keep, np.where(keep[:, None], soft, 0.0).astype(np.float32)


def _votes(row: list[str], where: str) -> np.ndarray:
    try:
        votes = np.array([int(v) for v in row], dtype=np.int64)
    except ValueError as e:
        raise FERDataError(f"{where}: malformed vote row ({e}); expected 10 whole numbers") from e
    if len(votes) != len(VOTE_COLUMNS) or (votes < 0).any():
        raise FERDataError(f"{where}: malformed vote row {row}; expected 10 counts for {', '.join(VOTE_COLUMNS)}")
    return votes


def _vote_rows(path: Path):
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or "Usage" not in reader.fieldnames or len(reader.fieldnames) < 12:
            raise FERDataError(f"{path}: expected Microsoft's fer2013new.csv header: Usage, Image name, "
                               f"{', '.join(VOTE_COLUMNS)}")
        yield from enumerate(reader, start=2)


def _table(images: torch.Tensor, votes: np.ndarray, paths: list[str], emotions: list[str], mode: LabelMode,
           source: Path) -> FaceTable:
    """The faces whose labels (by ``mode``) fall among ``emotions``, with their distributions over those alone."""
    keep, soft = labels_from_votes(np.asarray(votes), mode)
    chosen = [ALL_EMOTIONS.index(e) for e in emotions]
    inside = soft[:, chosen].sum(1)
    keep &= inside > (0.5 if mode == "majority" else 0.0)
    soft[:, [i for i in range(len(ALL_EMOTIONS)) if i not in chosen]] = 0
    soft = soft / np.maximum(soft.sum(1, keepdims=True), 1e-9)
    rows = np.flatnonzero(keep)
    if not len(rows):
        raise FERDataError(f"{source}: no face's {mode} label is among {emotions}")
    return FaceTable(
        images[torch.from_numpy(rows)],
        torch.from_numpy(soft[rows].argmax(1)).long(),
        [paths[i] for i in rows],
        torch.from_numpy(soft[rows]),
    )


def load_ferplus_split(root: Path, split: str, emotions: list[str], image_size: int, mode: LabelMode = "majority",
                       cache_dir: Path | None = None, skip_bad_files: bool = False) -> FaceTable:
    """One split of FER+ with labels by ``mode``: from its folder and ``label.csv`` (decoded once into the cache), or
    from ``fer2013.csv`` and ``fer2013new.csv``."""
    if (root / VOTES_CSV).is_file():
        images, votes, paths = _from_csv(root, split, image_size)
        return _table(images, votes, paths, emotions, mode, root / VOTES_CSV)
    folder = root / FOLDERS[split]
    labels = folder / LABEL_FILE
    if not labels.is_file():
        raise FERDataError(f"{labels}: not found; a FER+ split is a folder of fer*.png with Microsoft's label.csv")
    faces, bad = [], BadRows(labels, skip_bad_files)
    with open(labels, newline="") as f:
        for line, row in enumerate(csv.reader(f), start=1):
            if not row:
                continue
            where = f"{labels}:{line}"
            try:
                if len(row) != 2 + len(VOTE_COLUMNS):
                    raise FERDataError(f"{where}: malformed vote row: {len(row)} fields; expected the file name, the "
                                       "face box and 10 votes")
                faces.append(ListedFace(folder / row[0], _votes(row[2:], where), where))
            except FERDataError as e:
                bad(e)
    bad.report()
    images, kept, paths = decode_listed(faces, labels, image_size, cache_dir, skip_bad_files)
    return _table(images, np.stack([faces[i].value for i in kept]), paths, emotions, mode, labels)


def _from_csv(root: Path, split: str, image_size: int) -> tuple[torch.Tensor, np.ndarray, list[str]]:
    """Faces of ``fer2013.csv`` with the votes of the same rows of ``fer2013new.csv``; rows Microsoft left without an
    image name (not faces) are dropped."""
    pixels_csv, votes_csv = root / "fer2013.csv", root / VOTES_CSV
    faces = list(_read_csv_rows(pixels_csv))
    images, votes, paths = [], [], []
    for (line, row), (_, face_row) in zip(_vote_rows(votes_csv), faces):
        where = f"{votes_csv}:{line}"
        if row["Usage"] != face_row["Usage"]:
            raise FERDataError(f"{where}: Usage {row['Usage']!r} but {pixels_csv} row {line} says "
                               f"{face_row['Usage']!r}: the two files must match row for row")
        if row["Usage"] != CSV_USAGE[split] or not row.get("Image name", "").strip():
            continue
        values = [v for k, v in row.items() if k not in ("Usage", "Image name")]
        votes.append(_votes(values, where))
        _, face = _parse_row(pixels_csv, line, face_row)
        if face.shape[0] != image_size:
            face = np.asarray(Image.fromarray(face).resize((image_size, image_size), Image.Resampling.BILINEAR))
        images.append(face)
        paths.append(f"{pixels_csv}:{line}")
    if len(faces) != sum(1 for _ in _vote_rows(votes_csv)):
        raise FERDataError(f"{votes_csv}: not as many rows as {pixels_csv}; the two files must match row for row")
    if not paths:
        raise FERDataError(f"{votes_csv}: no faces with Usage {CSV_USAGE[split]}")
    return torch.from_numpy(np.stack(images)), np.stack(votes), paths
