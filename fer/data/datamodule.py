"""The LightningDataModule: FER data from an ImageFolder tree, a Kaggle CSV or the built-in synthetic faces."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from fer.data.ferplus import LabelMode, has_split, is_ferplus, load_ferplus_split
from fer.data.listed import is_affectnet, is_rafdb, load_affectnet_split, load_rafdb_split
from fer.data.reading import (
    EXPECTED_LAYOUT,
    FaceTable,
    FERDataError,
    csv_has_split,
    image_files,
    load_csv_split,
    load_folder_split,
    read_image,
)
from fer.data.synthetic import cache_root, make_synthetic_dataset
from fer.emotions import ALL_EMOTIONS, EMOTIONS, canonical_emotion, check_emotions

log = logging.getLogger(__name__)

SYNTHETIC = "synthetic"
DataFormat = Literal["auto", "folders", "emotion_folders", "fer2013_csv", "ferplus", "rafdb", "affectnet"]


@dataclass
class Augmentation:
    """Per-sample training augmentation (torchvision transforms v2); evaluation is never augmented."""

    rotation: float = 10.0  # degrees, either way
    translate: float = 0.1  # fraction of the side, either way
    scale: tuple[float, float] = (1.0, 1.0)
    hflip: float = 0.5  # probability
    erasing: float = 0.0  # probability of one RandomErasing patch
    crop: int | None = None  # side of a random square crop (train on crops, test with model.tta_crop); None: off


class FaceDataset(Dataset):
    """Decoded faces in memory; the transform gets a (1, H, W) uint8 tensor. The target is the label, or
    row i of ``targets`` (soft labels, one probability per class) when given."""

    def __init__(self, table: FaceTable, transform: v2.Transform, targets: torch.Tensor | None = None) -> None:
        self.table, self.transform = table, transform
        self.targets = table.labels if targets is None else targets

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(self.table.images[i].unsqueeze(0)), self.targets[i]


def stratified_split(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic (train, validation) index split that keeps every class's share."""
    g = torch.Generator().manual_seed(seed)
    train, val = [], []
    for c in labels.unique():
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_val = round(len(idx) * fraction)
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return torch.cat(train).sort().values, torch.cat(val).sort().values


class FERDataModule(L.LightningDataModule):
    """Faces from ``data_dir``: ``{train,validation|val,test}/<emotion>/*``, a ``fer2013.csv``, or ``synthetic``.

    Args:
        data_dir: the dataset tree, a Kaggle ``fer2013.csv`` (or a folder holding one), or ``synthetic``
            for the built-in generated faces.
        emotions: the classes to use, a subset of the canonical seven; labels follow the canonical order.
        image_size: side the faces are resized to (the model's input size; linked from the model by the CLI).
        batch_size: samples per batch.
        num_workers: DataLoader worker processes (the decoded cache is shared; workers only augment).
        val_fraction: share of ``train/`` held out, stratified, when there is no validation split.
        split_seed: seed of that split.
        augment: training augmentation.
        cache_dir: where decoded images are persisted (default: ``$FER_CACHE_DIR/decoded``); ``None`` with
            ``cache: false`` decodes every time.
        cache: persist decoded images between runs.
        skip_bad_files: warn about and skip unreadable images instead of stopping.
        synthetic_samples_per_class: training faces per emotion when ``data_dir`` is ``synthetic``.
        synthetic_difficulty: how far the synthetic faces vary around each emotion's face (pose, lighting, noise
            and the features themselves): 1 as drawn for the tests, below 1 easier.
        predict_path: image file or folder ``predict`` runs on (default: the test split, else validation).
        format: the layout of ``data_dir`` (docs/data.md): ``auto`` detects it from its files; ``folders``
            (``<split>/<emotion>/*``), ``emotion_folders`` (``<emotion>/*`` alone, as CK+ is: one split),
            ``fer2013_csv`` (Kaggle's ``fer2013.csv``), ``ferplus`` (FER+'s folders with ``label.csv``, or
            ``fer2013.csv`` with ``fer2013new.csv``), ``rafdb`` (RAF-DB basic) or ``affectnet`` (AffectNet's
            manual annotations) say it.
        label_mode: for data with votes (FER+): ``majority``, the reference rule (drop single votes, keep a face
            whose top emotion has more than half of the rest; 8 classes with ``contempt``), or ``probability``, the
            vote distribution as soft training targets (Barsoum et al., ICMI 2016). Validation and test always
            use the majority labels.
        split_dirs: folders of individual splits (``train``, ``validation``, ``test``) that live outside
            ``data_dir``, e.g. ``{test: /data/other/test}``.
        teacher: a trained checkpoint (same emotions; any input size), or a list of them (an ensemble: their
            mean), whose calibrated probabilities are blended into the training targets (knowledge
            distillation; on which faces: ``teacher_mode``).
        teacher_weight: the teacher's share of each training target; the label has the rest.
        teacher_mode: ``fixed``: the teacher's probabilities on the un-augmented faces, computed once before
            training, with its own test-time views (by ``fer.training.Trainer``, which training needs then).
            ``consistent``: the teacher sees every training batch as the
            student does, after augmentation (but before the model's mixup/CutMix), and nothing else ("consistent
            teaching": Beyer et al., CVPR 2022, "Knowledge distillation: a good teacher is patient and
            consistent"); a teacher's forward pass a step.
    """

    def __init__(
        self,
        data_dir: str | None = "data/fer2013",
        emotions: list[str] = list(EMOTIONS),  # noqa: B006 (never mutated; jsonargparse shows it)
        image_size: int = 48,
        batch_size: int = 128,
        num_workers: int = 1,
        val_fraction: float = 0.1,
        split_seed: int = 42,
        augment: Augmentation = Augmentation(),  # noqa: B008 (never mutated; jsonargparse shows it)
        cache_dir: str | None = None,
        cache: bool = True,
        skip_bad_files: bool = False,
        synthetic_samples_per_class: int = 300,
        synthetic_difficulty: float = 1.0,
        predict_path: str | None = None,
        split_dirs: dict[str, str] | None = None,
        format: DataFormat = "auto",
        label_mode: LabelMode = "majority",
        teacher: str | list[str] | None = None,
        teacher_weight: float = 0.5,
        teacher_mode: Literal["fixed", "consistent"] = "fixed",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.emotions = check_emotions(emotions)
        self.augment = augment
        if not 0 < val_fraction < 1:
            raise ValueError(f"`data.val_fraction` must be between 0 and 1, got {val_fraction}")
        if not 0 <= teacher_weight <= 1:
            raise ValueError(f"`data.teacher_weight` must be between 0 and 1, got {teacher_weight}")
        if augment.crop is not None and not 0 < augment.crop < image_size:
            raise ValueError(f"`data.augment.crop` must be a side below data.image_size ({image_size}), "
                             f"got {augment.crop}")
        if teacher_mode not in ("fixed", "consistent"):
            raise ValueError(f"`data.teacher_mode` must be 'fixed' or 'consistent', got {teacher_mode!r}")
        self.cache_dir = Path(cache_dir) if cache_dir else (cache_root() / "decoded" if cache else None)
        self.tables: dict[str, FaceTable] = {}
        self.train_targets: torch.Tensor | None = None  # soft training targets: votes (label_mode), teachers
        self.teacher_blended = False  # teacher_mode fixed: the teachers' probabilities are in train_targets
        # teacher_mode consistent: the teachers' mean probabilities of a batch of faces (fer.training.TeacherTargets)
        self.batch_teacher: Callable[[torch.Tensor], torch.Tensor] | None = None
        self.predict_files: list[str] = []

    # -- locating and loading ----------------------------------------------------------------------------
    def _root(self) -> Path:
        if self.hparams.data_dir == SYNTHETIC:
            return make_synthetic_dataset(samples_per_class=self.hparams.synthetic_samples_per_class,
                                          difficulty=self.hparams.synthetic_difficulty)
        root = Path(self.hparams.data_dir).expanduser()
        if not root.exists():
            raise FERDataError(f"data_dir {root}: not found. Expected layout:\n{EXPECTED_LAYOUT}")
        if self._format(root) == "fer2013_csv" and root.is_dir():
            return root / "fer2013.csv"
        return root

    def _format(self, root: Path) -> str:
        """The layout of ``root``: ``data.format``, or what its files show."""
        if self.hparams.format != "auto":
            return self.hparams.format
        if root.is_dir():
            for name, found in (("ferplus", is_ferplus), ("rafdb", is_rafdb), ("affectnet", is_affectnet)):
                if found(root):
                    return name
        if root.suffix.lower() == ".csv" or (root.is_dir() and not (root / "train").is_dir()
                                             and (root / "fer2013.csv").is_file()):
            return "fer2013_csv"
        if root.is_dir() and not (root / "train").is_dir() and any(
                canonical_emotion(d.name) for d in root.iterdir() if d.is_dir()):
            return "emotion_folders"
        return "folders"

    def load_split(self, split: str) -> FaceTable | None:
        """A split with labels indexing ``self.emotions``, or None if the data has no such split."""
        table = self._load_canonical(split)
        if table is not None:
            lut = torch.tensor([self.emotions.index(e) if e in self.emotions else -1 for e in ALL_EMOTIONS])
            table.labels = lut[table.labels]
        return table

    def _load_canonical(self, split: str) -> FaceTable | None:
        size = self.hparams.image_size
        explicit = (self.hparams.split_dirs or {}).get(split)
        if explicit:
            return load_folder_split(Path(explicit), self.emotions, size, self.cache_dir, self.hparams.skip_bad_files)
        if self.hparams.data_dir is None:
            if split == "train":
                raise FERDataError("Set data.data_dir, or data.split_dirs.train, to the training images")
            return None
        root = self._root()
        if self._format(root) == "ferplus":
            if split != "train" and not has_split(root, split):
                return None
            mode = self.hparams.label_mode if split == "train" else "majority"
            return load_ferplus_split(root, split, self.emotions, size, mode, self.cache_dir,
                                      self.hparams.skip_bad_files)
        listed = {"rafdb": load_rafdb_split, "affectnet": load_affectnet_split}.get(self._format(root))
        if listed:
            table = listed(root, split, self.emotions, size, self.cache_dir, self.hparams.skip_bad_files)
            if table is None and split == "train":
                raise FERDataError(f"{root}: no training faces")
            return table
        if self._format(root) == "emotion_folders":  # one split: training (validation split from it), or `test`
            if split == "validation":
                return None
            return load_folder_split(root, self.emotions, size, self.cache_dir, self.hparams.skip_bad_files)
        if root.is_file():
            if root.suffix.lower() != ".csv":
                raise FERDataError(f"data_dir {root}: expected a folder or a fer2013.csv file")
            if split != "train" and not csv_has_split(root, split):
                return None
            return load_csv_split(root, split, self.emotions, size, self.cache_dir)
        names = {"train": ["train"], "validation": ["validation", "val"], "test": ["test"]}[split]
        folder = next((root / n for n in names if (root / n).is_dir()), None)
        if folder is None:
            if split == "train":
                raise FERDataError(f"{root / 'train'}: folder not found. Expected layout:\n{EXPECTED_LAYOUT}")
            return None
        return load_folder_split(folder, self.emotions, size, self.cache_dir, self.hparams.skip_bad_files)

    def prepare_data(self) -> None:
        if self.hparams.data_dir == SYNTHETIC:
            self._root()  # generates the synthetic tree once, on one process

    def setup(self, stage: str) -> None:
        if stage in ("fit", "validate") and "validation" not in self.tables:
            train, val = self.load_split("train"), self.load_split("validation")
            if val is None:
                t, v = stratified_split(train.labels, self.hparams.val_fraction, self.hparams.split_seed)
                log.info("No validation split: holding out %d of %d training images", len(v), len(train))
                train, val = train.subset(t), train.subset(v)
            self.tables.update(train=train, validation=val)
            if self.hparams.label_mode == "probability" and train.soft is not None:
                self.train_targets = train.soft[:, [ALL_EMOTIONS.index(e) for e in self.emotions]]
        if stage == "test" and "test" not in self.tables:
            test = self.load_split("test")
            if test is None:
                raise FERDataError(
                    f"{self.hparams.data_dir}: no test split (test/ folder, PrivateTest rows or data.split_dirs.test)"
                )
            self.tables["test"] = test
        if stage == "predict":
            self._setup_predict()

    @property
    def teacher_paths(self) -> list[str]:
        """The ``data.teacher`` checkpoints, as a list (empty: no distillation)."""
        teachers = self.hparams.teacher
        return [] if not teachers else [teachers] if isinstance(teachers, str) else list(teachers)

    def _blend(self, labels: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        """``teacher_weight`` of the teachers' probabilities, the rest of the labels (hard, or soft: (N, classes))."""
        w = self.hparams.teacher_weight
        targets = labels if labels.ndim == 2 else torch.nn.functional.one_hot(labels, len(self.emotions))
        return (1 - w) * targets.to(probs) + w * probs

    def set_teacher_probabilities(self, probs: torch.Tensor) -> None:
        """Train on the blend of each training face's label and ``probs`` (N, emotions), the teachers' mean
        probabilities of the un-augmented training faces in their loaded order (``teacher_mode: fixed``)."""
        labels = self.tables["train"].labels
        agree = (probs.argmax(-1) == labels).float().mean()
        log.info("Teacher %s agrees with %.1f%% of the training labels", ", ".join(self.teacher_paths), 100 * agree)
        self.train_targets = self._blend(labels if self.train_targets is None else self.train_targets, probs)
        self.teacher_blended = True

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """With ``teacher_mode: consistent``, a training batch's labels become the blend of label and teachers'
        probabilities on that batch's augmented faces."""
        if self.batch_teacher is None or self.trainer is None or not self.trainer.training:
            return batch
        x, labels = batch
        with torch.no_grad(), self.trainer.precision_plugin.forward_context():
            probs = self.batch_teacher(x)
        return x, self._blend(labels, probs)

    def _setup_predict(self) -> None:
        path = self.hparams.predict_path
        if path is None:
            table = self.load_split("test") or self.load_split("validation")
            if table is None:
                raise FERDataError("Nothing to predict on: set `data.predict_path` to an image or a folder")
        else:
            files = image_files([path])
            if not files:
                raise FERDataError(f"predict_path {path}: no image files found")
            size = self.hparams.image_size
            images = torch.stack([torch.from_numpy(read_image(f, size)) for f in files])
            table = FaceTable(images, torch.full((len(files),), -1), [str(f) for f in files])
        self.tables["predict"] = table
        self.predict_files = table.paths

    # -- transforms and loaders ----------------------------------------------------------------------------

    def train_transform(self) -> v2.Transform:
        a = self.augment
        steps: list[v2.Transform] = []
        if a.rotation or a.translate or tuple(a.scale) != (1.0, 1.0):
            steps.append(v2.RandomAffine(degrees=a.rotation, translate=(a.translate, a.translate), scale=a.scale))
        if a.crop:
            steps.append(v2.RandomCrop(a.crop))
        if a.hflip:
            steps.append(v2.RandomHorizontalFlip(a.hflip))
        steps.append(v2.ToDtype(torch.float32, scale=True))  # [0, 1]; normalisation is the model's
        if a.erasing:
            steps.append(v2.RandomErasing(a.erasing))
        return v2.Compose(steps)

    def eval_transform(self) -> v2.Transform:
        return v2.ToDtype(torch.float32, scale=True)

    def _loader(self, split: str, train: bool = False) -> DataLoader:
        transform = self.train_transform() if train else self.eval_transform()
        targets = self.train_targets if train else None
        workers = self.hparams.num_workers
        return DataLoader(
            FaceDataset(self.tables[split], transform, targets),
            batch_size=self.hparams.batch_size,
            shuffle=train,
            drop_last=train and len(self.tables[split]) > self.hparams.batch_size,
            num_workers=workers,
            persistent_workers=workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        if self.teacher_paths and not self.teacher_blended and self.batch_teacher is None:
            raise FERDataError(f"data.teacher {', '.join(self.teacher_paths)}: the teachers' probabilities were not "
                               "computed; train with fer.training.Trainer (the CLI's), which computes them")
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("validation")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict")

    def class_counts(self, split: str = "train") -> torch.Tensor:
        """Images per configured emotion in a loaded split, in ``self.emotions`` order."""
        return torch.bincount(self.tables[split].labels, minlength=len(self.emotions))
