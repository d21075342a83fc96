"""RAF-DB, AffectNet and CK+ read from ``data_dir`` alone, each detected from its files; on tiny trees fabricated
in each exact format. A face's brightness encodes its emotion, so labels can be checked against pixels."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fer.data import FERDataError, FERDataModule
from fer.emotions import ALL_EMOTIONS

EIGHT = list(ALL_EMOTIONS)


def shade(emotion: str) -> int:
    return 20 + 25 * ALL_EMOTIONS.index(emotion)


def emotion_of(image) -> str:
    return ALL_EMOTIONS[(int(image[0, 0]) - 20 + 12) // 25]


def loaded(data_dir: Path, split: str = "train", **kwargs) -> FERDataModule:
    dm = FERDataModule(str(data_dir), emotions=kwargs.pop("emotions", EIGHT), num_workers=0, cache=False, **kwargs)
    dm.setup("test" if split == "test" else "fit")
    return dm


def check_labels(dm: FERDataModule, split: str) -> None:
    table = dm.tables[split]
    assert len(table) > 0
    assert all(emotion_of(image) == dm.emotions[label] for image, label in zip(table.images, table.labels))


def write_rafdb(root: Path, aligned: bool = True) -> Path:
    codes = {"surprise": 1, "fear": 2, "disgust": 3, "happy": 4, "sad": 5, "angry": 6, "neutral": 7}
    folder = root / "Image" / ("aligned" if aligned else "original")
    folder.mkdir(parents=True)
    (root / "EmoLabel").mkdir()
    lines = []
    for split in ("train", "test"):
        for i, (emotion, code) in enumerate(list(codes.items()) * 3):
            name = f"{split}_{i + 1:05d}"
            file = f"{name}_aligned.jpg" if aligned else f"{name}.jpg"
            Image.fromarray(np.full((100, 100, 3), shade(emotion), np.uint8)).save(folder / file, quality=100)
            lines.append(f"{name}.jpg {code}")
    (root / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.parametrize("aligned", [True, False])
def test_rafdb_is_detected_and_its_codes_and_splits_are_read(tmp_path, aligned):
    root = write_rafdb(tmp_path / "rafdb", aligned)
    dm = loaded(root)
    assert len(dm.tables["train"]) + len(dm.tables["validation"]) == 21  # no validation split: held out of train
    check_labels(dm, "train")
    check_labels(loaded(root, "test"), "test")


def test_rafdb_unknown_code_names_the_line(tmp_path):
    root = write_rafdb(tmp_path / "rafdb")
    labels = root / "EmoLabel" / "list_patition_label.txt"
    labels.write_text(labels.read_text() + "train_00099.jpg 9\n")
    with pytest.raises(FERDataError, match=r"list_patition_label.txt:43: expected '<name>.jpg <code>' with a code 1-7"):
        loaded(root)


AFFECTNET_CODES = {"neutral": 0, "happy": 1, "sad": 2, "surprise": 3, "fear": 4, "disgust": 5, "angry": 6,
                   "contempt": 7}


def write_affectnet(root: Path) -> Path:
    """training.csv / validation.csv and images under Manually_Annotated_Images/<sub>/; the face is a box of the
    emotion's shade inside a black photo, plus one row each of codes 8, 9 and 10."""
    root.mkdir()
    for split, file in (("train", "training.csv"), ("validation", "validation.csv")):
        with open(root / file, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["subDirectory_filePath", "face_x", "face_y", "face_width", "face_height",
                             "facial_landmarks", "expression", "valence", "arousal"])
            rows = [*AFFECTNET_CODES.items()] * 2 + [("neutral", 8), ("neutral", 9), ("neutral", 10)]
            for i, (emotion, code) in enumerate(rows):
                sub = root / "Manually_Annotated_Images" / str(i % 3)
                sub.mkdir(parents=True, exist_ok=True)
                photo = np.zeros((120, 160), np.uint8)
                photo[30:90, 50:110] = shade(emotion)
                name = f"{split}_{i}.jpg"
                Image.fromarray(photo).save(sub / name, quality=100)
                writer.writerow([f"{i % 3}/{name}", 50, 30, 60, 60, "1;2;3", code, 0.1, 0.2])
    return root


def test_affectnet_faces_are_cropped_by_their_boxes_and_non_faces_skipped(tmp_path):
    dm = loaded(write_affectnet(tmp_path / "affectnet"))
    assert len(dm.tables["train"]) == 16 and len(dm.tables["validation"]) == 16  # 8, 9 and 10 left out
    check_labels(dm, "train")
    check_labels(dm, "validation")
    assert (dm.tables["train"].images.float().std((1, 2)) < 3).all()  # the crop is the face alone, not the photo


def test_affectnet_box_outside_the_image_names_the_line(tmp_path):
    root = write_affectnet(tmp_path / "affectnet")
    rows = (root / "training.csv").read_text().splitlines()
    rows[3] = rows[3].replace(",50,30,60,60,", ",150,30,60,60,")
    (root / "training.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(FERDataError, match=r"training.csv:4: face box \[150, 30, 60, 60\] is outside"):
        loaded(root)
    dm = loaded(root, skip_bad_files=True)
    assert len(dm.tables["train"]) + len(dm.tables["validation"]) == 15 + 16


def test_ckplus_emotion_folders_alone_are_one_split(tmp_path):
    root = tmp_path / "ckplus"
    for emotion in ("anger", "contempt", "disgust", "fear", "happy", "sadness", "surprise"):
        (root / emotion).mkdir(parents=True)
        for i in range(6):
            canonical = {"anger": "angry", "sadness": "sad"}.get(emotion, emotion)
            Image.fromarray(np.full((64, 64), shade(canonical), np.uint8)).save(root / emotion / f"S{i:03d}.png")
    dm = loaded(root)
    assert len(dm.tables["train"]) + len(dm.tables["validation"]) == 42
    check_labels(dm, "train")
    check_labels(loaded(root, "test"), "test")


def test_evaluate_compares_on_shared_emotions_and_counts_the_rest(trained, tmp_path):
    """The conftest model knows six emotions (not disgust): a CK+-style set's disgust and contempt are left out."""
    from fer.cli import main

    recognizer, _ = trained
    checkpoint = tmp_path / "six.ckpt"
    recognizer.save(str(checkpoint))
    root = tmp_path / "ckplus"
    for emotion in ("anger", "contempt", "disgust", "happy", "surprise"):
        (root / emotion).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.full((48, 48), 30 * i, np.uint8)).save(root / emotion / f"{i}.png")
    rows = main(["evaluate", str(root), "--ckpt", str(checkpoint), "--json", str(tmp_path / "out.json"),
                 "--plots", str(tmp_path / "plots")])
    (row,) = rows
    assert row["split"] == "test" and row["faces"] == 12 and row["emotions"] == ["angry", "happy", "surprise"]
    assert sum(row["left_out"].values()) == 8 and set(row["per_class_recall"]) == {"angry", "happy", "surprise"}
    assert sum(map(sum, row["confusion_matrix"]["counts"])) == 12
    assert json.loads((tmp_path / "out.json").read_text()) == rows
    assert Image.open(tmp_path / "plots" / "ckplus_test_confusion.png").size[0] > 400  # 3 rows x 6 columns
    (shared,) = main(["evaluate", str(root), "--ckpt", str(checkpoint), "--shared-only"])
    columns = [row["confusion_matrix"]["columns"].index(e) for e in ("angry", "happy", "surprise")]
    answered = np.array(shared["confusion_matrix"]["counts"]).sum(0)
    assert answered.sum() == answered[columns].sum() == 12  # only the three shared emotions are answered
    only_contempt = tmp_path / "contempt_only"
    (only_contempt / "contempt").mkdir(parents=True)
    Image.fromarray(np.zeros((48, 48), np.uint8)).save(only_contempt / "contempt" / "0.png")
    with pytest.raises(SystemExit, match="share none with the model's"):
        main(["evaluate", str(only_contempt), "--ckpt", str(checkpoint)])


def test_check_data_counts_exact_copies_within_and_across_splits(tmp_path):
    from fer.cli import main

    for split, faces in {"train": [("happy", 1), ("happy", 1), ("sad", 1), ("sad", 2)],
                         "validation": [("happy", 1), ("angry", 2), ("angry", 3)]}.items():
        for i, (emotion, value) in enumerate(faces):
            (tmp_path / split / emotion).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((48, 48), 40 * value, np.uint8)).save(tmp_path / split / emotion / f"{i}.png")
    report = main(["check-data", str(tmp_path)])
    assert report["within"]["train"] == {"faces": 4, "copies": 2, "copied_faces_with_several_labels": 1}
    assert report["within"]["validation"]["copies"] == 0
    assert report["across"]["validation in train"] == {"faces": 2, "with_another_label": 1}


def test_bad_rows_are_skipped_and_counted_with_skip_bad_files(tmp_path, caplog):
    root = write_rafdb(tmp_path / "rafdb")
    labels = root / "EmoLabel" / "list_patition_label.txt"
    labels.write_text(labels.read_text() + "train_00099.jpg 9\ntrain_00100.jpg\n")
    dm = loaded(root, skip_bad_files=True)
    assert len(dm.tables["train"]) + len(dm.tables["validation"]) == 21
    assert "skipped 2 bad rows" in caplog.text
