"""FER+ read as Microsoft releases it (folders with label.csv, or fer2013.csv with fer2013new.csv), its label
modes, and contempt as an optional eighth emotion; on tiny trees fabricated in those exact formats."""

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fer.cli import main
from fer.data import FERDataError, FERDataModule
from fer.data.ferplus import labels_from_votes
from fer.emotions import ALL_EMOTIONS, EMOTIONS, check_emotions

EIGHT = list(ALL_EMOTIONS)
# Votes for neutral, happiness, surprise, sadness, anger, disgust, fear, contempt, unknown, not-a-face, and the
# emotion the majority rule gives (None: the face is dropped).
ROWS = [
    ([6, 0, 1, 1, 0, 0, 0, 0, 2, 0], "neutral"),  # single votes dropped: 6 of 8
    ([0, 9, 0, 0, 0, 0, 0, 0, 1, 0], "happy"),
    ([0, 0, 0, 0, 0, 0, 0, 7, 3, 0], "contempt"),
    ([4, 0, 0, 1, 3, 2, 0, 0, 0, 0], None),  # 4 of 9 is not more than half
    ([0, 0, 0, 0, 0, 0, 0, 0, 8, 2], None),  # unknown
    ([0, 0, 0, 0, 0, 0, 0, 0, 0, 10], None),  # not a face
    ([0, 0, 2, 0, 6, 0, 2, 0, 0, 0], "angry"),
    ([0, 0, 0, 5, 0, 0, 0, 0, 0, 0], "sad"),
]


def test_the_majority_rule_and_the_vote_distributions():
    votes = np.array([v for v, _ in ROWS])
    keep, soft = labels_from_votes(votes, "majority")
    assert [ALL_EMOTIONS[i] if k else None for k, i in zip(keep, soft.argmax(1))] == [e for _, e in ROWS]
    keep, soft = labels_from_votes(votes, "probability")
    assert keep.tolist() == [True, True, True, True, False, False, True, True]
    assert np.allclose(soft[keep].sum(1), 1)
    angry, fear = ALL_EMOTIONS.index("angry"), ALL_EMOTIONS.index("fear")
    assert np.isclose(soft[6][angry], 0.6) and np.isclose(soft[6][fear], 0.2)
    assert soft[0][ALL_EMOTIONS.index("neutral")] == 1  # the single votes for surprise and sadness are dropped


def test_contempt_is_an_eighth_emotion_after_the_seven():
    assert ALL_EMOTIONS[:7] == EMOTIONS and check_emotions(["contempt", "happy", "angry"]) == ["angry", "happy",
                                                                                             "contempt"]


def write_ferplus(root: Path, folders: tuple[str, ...] = ("FER2013Train", "FER2013Valid"), copies: int = 3) -> Path:
    """Microsoft's folder layout: fer*.png and a headerless label.csv (name, box, 10 votes) per split; each face's
    brightness encodes its row of ROWS."""
    for folder in folders:
        (root / folder).mkdir(parents=True)
        with open(root / folder / "label.csv", "w", newline="") as f:
            writer = csv.writer(f)
            for copy in range(copies):
                for i, (votes, _) in enumerate(ROWS):
                    name = f"fer{copy * len(ROWS) + i:07d}.png"
                    Image.fromarray(np.full((48, 48), 20 + 25 * i, np.uint8)).save(root / folder / name)
                    writer.writerow([name, "(0, 0, 48, 48)", *votes])
    return root


def test_folders_are_read_with_eight_classes_and_seven_by_default(tmp_path):
    root = write_ferplus(tmp_path / "ferplus")
    dm = FERDataModule(str(root), emotions=EIGHT, num_workers=0)
    dm.setup("fit")
    train = dm.tables["train"]
    assert len(train) == 3 * 5  # five of the eight rows have a majority
    for image, label in zip(train.images, train.labels):
        assert ROWS[(int(image[0, 0]) - 20) // 25][1] == EIGHT[label]
    seven = FERDataModule(str(root), num_workers=0)  # the default classes: contempt's faces are left out
    seven.setup("fit")
    assert len(seven.tables["train"]) == 3 * 4 and seven.emotions == list(EMOTIONS)


def test_probability_mode_trains_on_the_votes_and_validates_on_the_majority(tmp_path):
    root = write_ferplus(tmp_path / "ferplus")
    dm = FERDataModule(str(root), emotions=EIGHT, num_workers=0, batch_size=4, label_mode="probability")
    dm.setup("fit")
    assert len(dm.tables["train"]) == 3 * 6 and len(dm.tables["validation"]) == 3 * 5
    assert torch.allclose(dm.train_targets.sum(1), torch.ones(18))
    _, targets = next(iter(dm.train_dataloader()))
    assert targets.shape == (4, 8)
    _, labels = next(iter(dm.val_dataloader()))
    assert labels.ndim == 1


def test_fer2013_csv_with_fer2013new_csv_gives_the_folders_labels(tmp_path):
    rows = [(votes, usage) for usage in ("Training", "PublicTest") for votes, _ in ROWS]
    with open(tmp_path / "fer2013.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["emotion", "pixels", "Usage"])
        for i, (_, usage) in enumerate(rows):
            writer.writerow([0, " ".join([str(20 + 25 * (i % len(ROWS)))] * 48 * 48), usage])
    with open(tmp_path / "fer2013new.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["Usage", "Image name", "neutral", "happiness", "surprise", "sadness", "anger", "disgust",
                         "fear", "contempt", "unknown", "NF"])
        for i, (votes, usage) in enumerate(rows):
            writer.writerow([usage, "" if i == 1 else f"fer{i:07d}.png", *votes])  # row 1: no image name, no face
    dm = FERDataModule(str(tmp_path), emotions=EIGHT, num_workers=0)
    dm.setup("fit")
    labels = [EIGHT[i] for i in dm.tables["train"].labels]
    assert labels == [e for i, (_, e) in enumerate(ROWS) if e and i != 1]
    assert len(dm.tables["validation"]) == 5


def test_bad_label_files_name_the_file_and_line(tmp_path):
    root = write_ferplus(tmp_path / "missing", copies=1)
    (root / "FER2013Train" / "fer0000002.png").unlink()
    with pytest.raises(FERDataError, match=r"FER2013Train/label.csv:3: references fer0000002.png"):
        FERDataModule(str(root), emotions=EIGHT, num_workers=0, cache=False).setup("fit")
    dm = FERDataModule(str(root), emotions=EIGHT, num_workers=0, cache=False, skip_bad_files=True)
    dm.setup("fit")
    assert len(dm.tables["train"]) == 4  # the contempt face is the one skipped
    root = write_ferplus(tmp_path / "malformed", copies=1)
    with open(root / "FER2013Valid" / "label.csv", "a") as f:
        f.write('fer0000009.png,"(0, 0, 48, 48)",1,2,three,0,0,0,0,0,0,0\n')
    with pytest.raises(FERDataError, match=r"FER2013Valid/label.csv:9: malformed vote row"):
        FERDataModule(str(root), emotions=EIGHT, num_workers=0, cache=False).setup("fit")


def test_an_eight_class_model_trains_on_ferplus_through_the_cli(tmp_path):
    root = write_ferplus(tmp_path / "ferplus")
    cli = main(["fit", "--config", "configs/quickstart.yaml", "--data.data_dir", str(root), "--data.emotions",
                str(EIGHT), "--data.label_mode", "probability", "--data.batch_size", "4", "--data.num_workers", "0",
                "--trainer.fast_dev_run", "true", "--trainer.default_root_dir", str(tmp_path)])
    assert cli.model.emotions == EIGHT and cli.trainer.state.finished
    with torch.no_grad():
        assert cli.model.eval().probabilities(torch.rand(2, 1, 48, 48)).shape == (2, 8)
