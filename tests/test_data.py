import os
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from fer.cli import main
from fer.data import FERDataError, FERDataModule
from fer.data.datamodule import stratified_split
from fer.data.reading import load_folder_split, read_image
from fer.emotions import EMOTIONS
from fer.training import EmotionClassifier, TeacherTargets


def write_face(path: Path, value: int, size: int = 48, mode: str = "L", fmt: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (size, size), value if mode == "L" else (value,) * len(mode)).save(path, format=fmt)


def make_tree(root: Path, folders: dict[str, int], per_class: int = 3, splits=("train", "validation")) -> Path:
    """Each folder's images have one gray value, so a label can be checked against the pixels."""
    for split in splits:
        for folder, value in folders.items():
            for i in range(per_class):
                write_face(root / split / folder / f"{i}.png", value)
    return root


def loaded(dm: FERDataModule, split: str = "train"):
    dm.prepare_data()
    dm.setup("fit")
    return dm.tables[split]


# Aliased, oddly cased folder names; gray value encodes the true canonical emotion.
ALIASED = {"Anger": 10, "disgusted": 40, "FEARFUL": 70, "Happiness": 100, "neutral": 130, "SADNESS": 160,
           "Surprised": 190}
TRUE = dict(zip(ALIASED.values(), EMOTIONS))


def test_aliased_and_cased_folders_map_onto_the_canonical_order(tmp_path):
    table = loaded(FERDataModule(str(make_tree(tmp_path, ALIASED)), num_workers=0))
    for image, label in zip(table.images, table.labels):
        assert EMOTIONS[label] == TRUE[int(image[0, 0])]
    assert sorted(table.labels.unique().tolist()) == list(range(7))


def test_emotion_subset_drops_folders_and_reindexes(tmp_path):
    six = [e for e in EMOTIONS if e != "disgust"]
    dm = FERDataModule(str(make_tree(tmp_path, ALIASED)), emotions=six, num_workers=0)
    table = loaded(dm)
    assert len(table) == 6 * 3
    for image, label in zip(table.images, table.labels):
        assert six[label] == TRUE[int(image[0, 0])]
    assert dm.class_counts().tolist() == [3] * 6


def test_any_mode_and_size_becomes_48px_gray(tmp_path):
    for mode in ("L", "RGB", "RGBA", "P", "CMYK", "I;16"):
        path = tmp_path / f"{mode.replace(';', '')}.png"
        if mode == "I;16":
            im = Image.new("I;16", (97, 61), 30000)
        else:
            im = Image.new("RGB", (97, 61), (200, 100, 50)).convert(mode)
        im.save(path if mode != "CMYK" else path.with_suffix(".jpg"))
        arr = read_image(path if mode != "CMYK" else path.with_suffix(".jpg"), 48)
        assert arr.shape == (48, 48) and arr.dtype == np.uint8
        if mode == "I;16":
            assert 100 < arr.mean() < 130  # 30000/65535 of full scale, not clipped to white


def test_validation_alias_val_folder(tmp_path):
    make_tree(tmp_path, {"happy": 10, "sad": 20}, splits=("train",))
    make_tree(tmp_path, {"happy": 10, "sad": 20}, per_class=2, splits=("val",))
    assert len(loaded(FERDataModule(str(tmp_path), emotions=["happy", "sad"], num_workers=0), "validation")) == 4


def test_missing_validation_gives_a_deterministic_stratified_split(tmp_path):
    make_tree(tmp_path, {"happy": 10, "sad": 20}, per_class=20, splits=("train",))
    a = loaded(FERDataModule(str(tmp_path), emotions=["happy", "sad"], val_fraction=0.25, num_workers=0), "validation")
    b = loaded(FERDataModule(str(tmp_path), emotions=["happy", "sad"], val_fraction=0.25, num_workers=0), "validation")
    assert a.paths == b.paths
    assert torch.bincount(a.labels).tolist() == [5, 5]


def test_stratified_split_keeps_shares():
    labels = torch.tensor([0] * 90 + [1] * 10)
    train, val = stratified_split(labels, 0.2, seed=0)
    assert torch.bincount(labels[val]).tolist() == [18, 2]
    assert len(set(train.tolist()) & set(val.tolist())) == 0 and len(train) + len(val) == 100


def test_training_augmentation_changes_images_but_evaluation_does_not(tiny_tree):
    dm = FERDataModule(str(tiny_tree), num_workers=0)
    dm.setup("fit")
    image = dm.tables["train"].images[0].unsqueeze(0)
    torch.manual_seed(0)
    augmented = [dm.train_transform()(image) for _ in range(4)]
    assert any(not torch.equal(augmented[0], a) for a in augmented[1:])
    evaluated = dm.eval_transform()(image)
    assert torch.equal(evaluated, dm.eval_transform()(image))
    assert torch.allclose(evaluated, image.float() / 255, atol=1e-6)


def test_random_crops_train_on_smaller_faces_and_evaluation_keeps_the_whole_face(tiny_tree):
    from fer.data.datamodule import Augmentation

    dm = FERDataModule(str(tiny_tree), num_workers=0, augment=Augmentation(crop=40))
    dm.setup("fit")
    image = dm.tables["train"].images[0].unsqueeze(0)
    assert dm.train_transform()(image).shape[-2:] == (40, 40)
    assert dm.eval_transform()(image).shape[-2:] == (48, 48)
    with pytest.raises(ValueError, match=r"data.augment.crop.*below data.image_size \(48\), got 48"):
        FERDataModule(str(tiny_tree), augment=Augmentation(crop=48))


# -- bad data: a clear error naming the file, before training ---------------------------------------------------


def test_zero_byte_file(tmp_path):
    make_tree(tmp_path, {"happy": 10, "sad": 20})
    bad = tmp_path / "train" / "sad" / "empty.png"
    bad.touch()
    with pytest.raises(FERDataError, match=r"empty\.png: file is empty \(0 bytes\)"):
        loaded(FERDataModule(str(tmp_path), emotions=["happy", "sad"], num_workers=0))


def test_truncated_file(tmp_path):
    make_tree(tmp_path, {"happy": 10, "sad": 20})
    bad = tmp_path / "train" / "happy" / "cut.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 48), dtype=np.uint8)).save(bad)
    bad.write_bytes(bad.read_bytes()[:200])
    with pytest.raises(FERDataError, match=r"cut\.jpg: corrupt or truncated"):
        loaded(FERDataModule(str(tmp_path), emotions=["happy", "sad"], num_workers=0))


def test_non_image_file(tmp_path):
    make_tree(tmp_path, {"happy": 10, "sad": 20})
    (tmp_path / "train" / "happy" / "notes.png").write_text("not really a picture")
    with pytest.raises(FERDataError, match=r"notes\.png: not an image file"):
        loaded(FERDataModule(str(tmp_path), emotions=["happy", "sad"], num_workers=0))


def test_unknown_emotion_folder(tmp_path):
    make_tree(tmp_path, {"happy": 10, "bored": 20})
    with pytest.raises(FERDataError, match=r"bored.*unknown emotion folder.*angry.*contempt"):
        loaded(FERDataModule(str(tmp_path), num_workers=0))


def test_a_contempt_folder_is_read_only_when_contempt_is_one_of_the_emotions(tmp_path):
    make_tree(tmp_path, {"happy": 10, "contempt": 20})
    seven = FERDataModule(str(tmp_path), num_workers=0)
    assert set(loaded(seven).labels.tolist()) == {seven.emotions.index("happy")}
    both = FERDataModule(str(tmp_path), emotions=["happy", "contempt"], num_workers=0)
    assert both.emotions == ["happy", "contempt"] and set(loaded(both).labels.tolist()) == {0, 1}


def test_empty_split(tmp_path):
    make_tree(tmp_path, {"happy": 10}, splits=("train",))
    (tmp_path / "validation" / "happy").mkdir(parents=True)
    with pytest.raises(FERDataError, match=r"validation: split is empty"):
        loaded(FERDataModule(str(tmp_path), num_workers=0))


def test_missing_folder_shows_the_expected_layout(tmp_path):
    with pytest.raises(FERDataError, match=r"not found(.|\n)*train/<emotion>"):
        loaded(FERDataModule(str(tmp_path / "nowhere"), num_workers=0))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FERDataError, match=r"train: folder not found(.|\n)*validation/<emotion>"):
        loaded(FERDataModule(str(tmp_path / "empty"), num_workers=0))


def test_skip_bad_files_warns_and_counts(tmp_path, caplog):
    make_tree(tmp_path, {"happy": 10, "sad": 20})
    (tmp_path / "train" / "sad" / "empty.png").touch()
    (tmp_path / "train" / "sad" / "junk.jpg").write_text("junk")
    table = loaded(FERDataModule(str(tmp_path), emotions=["happy", "sad"], num_workers=0, skip_bad_files=True))
    assert len(table) == 6
    assert "skipped 2 unreadable images" in caplog.text


def test_cli_reports_bad_data_before_training(tmp_path):
    make_tree(tmp_path, {"happy": 10, "grumpy": 20})
    with pytest.raises(SystemExit, match=r"data error: .*grumpy"):
        main(["fit", "--config", "configs/quickstart.yaml", "--data.data_dir", str(tmp_path),
              "--trainer.logger", "false", "--trainer.callbacks", "[]", "--trainer.enable_checkpointing", "false"])


# -- the decoded-image cache ------------------------------------------------------------------------------------


def test_cache_is_reused_and_invalidated_by_changed_files(tmp_path):
    root = make_tree(tmp_path / "d", {"happy": 10, "sad": 20}, splits=("train",))
    cache = tmp_path / "cache"
    first = load_folder_split(root / "train", ["happy", "sad"], 48, cache)
    assert len(list(cache.glob("*.pt"))) == 1
    # A cache hit must not decode: make decoding impossible and load again.
    import fer.data.reading as reading

    original = reading.read_image
    reading.read_image = None
    try:
        again = load_folder_split(root / "train", ["happy", "sad"], 48, cache)
    finally:
        reading.read_image = original
    assert torch.equal(first.images, again.images)

    changed = root / "train" / "happy" / "0.png"
    write_face(changed, 99)
    os.utime(changed, ns=(1, 1))  # a different mtime even on coarse file systems
    write_face(root / "train" / "sad" / "new.png", 77)
    fresh = load_folder_split(root / "train", ["happy", "sad"], 48, cache)
    assert len(fresh) == len(first) + 1
    assert int(fresh.images[fresh.paths.index(str(changed))][0, 0]) == 99
    assert len(list(cache.glob("*.pt"))) == 1  # the stale cache was replaced, not kept beside


# -- the Kaggle CSV ---------------------------------------------------------------------------------------------


def write_csv(path: Path) -> Path:
    rows = ["emotion,pixels,Usage"]
    # CSV label order: 0 angry, 1 disgust, 2 fear, 3 happy, 4 sad, 5 surprise, 6 neutral
    for usage, n in (("Training", 3), ("PublicTest", 2), ("PrivateTest", 1)):
        for label in range(7):
            for _ in range(n):
                rows.append(f"{label},{' '.join([str(label * 30)] * 2304)},{usage}")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_csv_is_read_with_its_own_label_order(tmp_path):
    csv_path = write_csv(tmp_path / "fer2013.csv")
    dm = FERDataModule(str(tmp_path), num_workers=0)  # a folder holding fer2013.csv
    table = loaded(dm)
    assert len(table) == 21 and len(dm.tables["validation"]) == 14
    csv_order = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    for image, label in zip(table.images, table.labels):
        assert EMOTIONS[label] == csv_order[int(image[0, 0]) // 30]
    dm.setup("test")
    assert len(dm.tables["test"]) == 7
    assert len(loaded(FERDataModule(str(csv_path), num_workers=0))) == 21  # the file itself


def test_convert_csv_command_writes_the_tree(tmp_path, capsys):
    csv_path = write_csv(tmp_path / "fer2013.csv")
    main(["convert-csv", str(csv_path), str(tmp_path / "tree")])
    assert "train: 21" in capsys.readouterr().out
    assert len(list((tmp_path / "tree" / "test" / "neutral").glob("*.png"))) == 1
    table = loaded(FERDataModule(str(tmp_path / "tree"), num_workers=0))
    assert len(table) == 21
    for image, label in zip(table.images, table.labels):
        in_csv_order = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
        assert in_csv_order[int(image[0, 0]) // 30] == EMOTIONS[label]


# -- soft labels from a teacher (knowledge distillation) ----------------------------------------------------------

def setup_fit(dm: FERDataModule) -> None:
    """``dm.setup("fit")`` and what ``fer.training.Trainer`` adds when training starts: the teachers' targets."""
    dm.setup("fit")
    TeacherTargets().setup(SimpleNamespace(datamodule=dm), None, "fit")


@torch.inference_mode()
def fp32_probabilities(checkpoint: str, images: torch.Tensor) -> torch.Tensor:
    """What a teacher should give the (N, H, W) uint8 ``images``, computed in fp32 here."""
    model = EmotionClassifier.load_from_checkpoint(checkpoint, map_location="cpu").eval()
    return model.probabilities(images.unsqueeze(1).float() / 255)


def test_teacher_blends_its_probabilities_into_training_targets_only(tiny_tree, fitted):
    checkpoint = fitted[0].trainer.checkpoint_callback.best_model_path
    dm = FERDataModule(str(tiny_tree), num_workers=0, batch_size=16, teacher=checkpoint, teacher_weight=0.3)
    dm.setup("validate")
    assert dm.train_targets is None  # validation alone does not run the teacher
    setup_fit(dm)
    table = dm.tables["train"]
    probs = fp32_probabilities(checkpoint, table.images)
    onehot = torch.nn.functional.one_hot(table.labels, len(EMOTIONS)).float()
    assert torch.allclose(dm.train_targets, 0.7 * onehot + 0.3 * probs, atol=0.02)  # the teacher runs in bf16
    _, targets = next(iter(dm.train_dataloader()))
    assert targets.shape == (16, len(EMOTIONS)) and torch.allclose(targets.sum(-1), torch.ones(16))
    _, labels = next(iter(dm.val_dataloader()))
    assert labels.dtype == torch.int64 and labels.ndim == 1


def test_teachers_in_a_list_are_averaged(tiny_tree, fitted, tmp_path):
    checkpoint = fitted[0].trainer.checkpoint_callback.best_model_path
    other = torch.load(checkpoint, map_location="cpu", weights_only=False)  # a second, different teacher
    torch.manual_seed(0)
    for name, tensor in other["state_dict"].items():
        if name.endswith("bias"):
            tensor.add_(0.5 * torch.randn_like(tensor))
    torch.save(other, tmp_path / "other.ckpt")
    teachers = [checkpoint, str(tmp_path / "other.ckpt")]
    dm = FERDataModule(str(tiny_tree), num_workers=0, teacher=teachers, teacher_weight=1.0)
    setup_fit(dm)
    probs = [fp32_probabilities(t, dm.tables["train"].images) for t in teachers]
    assert not torch.allclose(probs[0], probs[1], atol=0.05)
    assert torch.allclose(dm.train_targets, (probs[0] + probs[1]) / 2, atol=0.02)  # bf16


def test_teacher_at_another_input_size_sees_the_faces_at_its_own(tiny_tree, fitted):
    checkpoint = fitted[0].trainer.checkpoint_callback.best_model_path  # a 48-px model
    dm = FERDataModule(str(tiny_tree), num_workers=0, image_size=64, teacher=checkpoint, teacher_weight=1.0)
    setup_fit(dm)
    assert dm.tables["train"].images.shape[-1] == 64
    at_48 = FERDataModule(str(tiny_tree), num_workers=0)
    at_48.setup("fit")
    probs = fp32_probabilities(checkpoint, at_48.tables["train"].images)
    # Upscaled to 64 px and back down to 48 blurs the faces a little: close to the originals' probabilities, not equal.
    assert (dm.train_targets.argmax(-1) == probs.argmax(-1)).float().mean() > 0.8
    assert (dm.train_targets - probs).abs().mean() < 0.06


def test_a_consistent_teacher_labels_each_training_batch_as_augmented_and_only_training_batches(tiny_tree, fitted):
    checkpoint = fitted[0].trainer.checkpoint_callback.best_model_path
    dm = FERDataModule(str(tiny_tree), num_workers=0, batch_size=16, teacher=checkpoint, teacher_weight=0.3,
                       teacher_mode="consistent")
    setup_fit(dm)
    assert dm.train_targets is None  # nothing computed in advance
    x, labels = next(iter(dm.train_dataloader()))
    assert labels.dtype == torch.int64  # the loader still gives labels; the teacher comes after the transfer
    dm.trainer = L.Trainer(precision="32-true", logger=False, enable_checkpointing=False, enable_progress_bar=False)
    dm.trainer.training = True
    faces, targets = dm.on_after_batch_transfer((x, labels), 0)
    assert faces is x
    teacher = EmotionClassifier.load_from_checkpoint(checkpoint, map_location="cpu").eval()
    teacher.hparams.tta_flip = False  # the student's view alone
    with torch.no_grad():
        probs = teacher.probabilities(x)
        mirrored = teacher.probabilities(x.flip(-1))
    onehot = torch.nn.functional.one_hot(labels, len(EMOTIONS)).float()
    assert torch.allclose(targets, 0.7 * onehot + 0.3 * probs, atol=1e-5)
    assert not torch.allclose(targets, 0.7 * onehot + 0.3 * (probs + mirrored) / 2, atol=1e-3)
    dm.trainer.validating = True
    assert dm.on_after_batch_transfer((x, labels), 0)[1] is labels


def test_teacher_of_other_emotions_is_refused(tiny_tree, fitted):
    checkpoint = fitted[0].trainer.checkpoint_callback.best_model_path
    dm = FERDataModule(str(tiny_tree), num_workers=0, emotions=[e for e in EMOTIONS if e != "disgust"],
                       teacher=checkpoint)
    with pytest.raises(FERDataError, match="data.teacher"):
        setup_fit(dm)


def test_a_teacher_needs_the_trainer_that_computes_its_targets(tiny_tree, fitted):
    checkpoint = fitted[0].trainer.checkpoint_callback.best_model_path
    dm = FERDataModule(str(tiny_tree), num_workers=0, teacher=checkpoint)
    dm.setup("fit")  # as a plain lightning.Trainer would: nobody computed the teacher's probabilities
    with pytest.raises(FERDataError, match="data.teacher .*fer.training.Trainer"):
        dm.train_dataloader()
