import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import SIX
from fer import EmotionRecognizer
from fer.emotions import ALL_EMOTIONS, EMOTIONS
from fer.faces import Box


def test_train_save_load_round_trip_keeps_weights_and_emotion_order(trained, tiny_tree, tmp_path):
    r, _ = trained
    path = tmp_path / "emotion_model.ckpt"
    r.save(str(path))
    loaded = EmotionRecognizer.load(str(path))
    assert loaded.emotions == SIX
    face = tiny_tree / "test" / "happy" / "00000.png"
    assert loaded.predict_faces(face, whole_image_if_no_face=True) == r.predict_faces(face, whole_image_if_no_face=True)
    assert loaded.predict(face) in SIX


def test_evaluate_reports_metrics_and_writes_the_figure(trained, tiny_tree, tmp_path):
    r, _ = trained
    result = r.evaluate(str(tiny_tree / "test"), out_dir=str(tmp_path))
    assert result["labels"] == SIX
    assert set(result["per_class"]) == set(SIX)
    assert sum(map(sum, result["confusion_matrix"])) == 6 * 15  # disgust's folder is left out
    assert 0 <= result["accuracy"] <= 1 and 0 <= result["macro_f1"] <= 1
    assert 0 <= result["ece"] <= 1 and 0 <= result["ece_uncalibrated"] <= 1 and result["temperature"] > 0
    assert json.loads((tmp_path / "evaluate_confusion_matrix.json").read_text())["counts"] == result["confusion_matrix"]
    assert (tmp_path / "evaluate_confusion_matrix.png").exists()
    assert not list(Path.cwd().glob("test_*.json"))  # nothing written into the working directory



def test_evaluate_writes_files_only_where_asked_or_into_the_run_folder(trained, tiny_tree, tmp_path, monkeypatch):
    r, _ = trained
    monkeypatch.chdir(tmp_path)
    r.save("m.ckpt")
    EmotionRecognizer.load("m.ckpt").evaluate(str(tiny_tree / "test"))  # a loaded model has no run folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.ckpt"]
    r.evaluate(str(tiny_tree / "test"))  # the model train() made: into that run's folder
    assert (r.log_dir / "evaluate_confusion_matrix.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.ckpt"]

def test_training_history_plot(trained):
    r, _ = trained
    fig = r.plot_training_history()
    assert [len(line.get_xdata()) for line in fig.axes[1].lines] == [2, 2]  # train and validation, 2 epochs
    assert (r.log_dir / "training_history.png").stat().st_size > 5000


def test_every_face_is_cropped_and_classified_largest_first(trained, tiny_tree, monkeypatch):
    r, _ = trained
    face = np.asarray(Image.open(tiny_tree / "test" / "sad" / "00001.png"))
    photo = np.full((200, 300), 90, np.uint8)
    photo[20:68, 30:78] = face
    photo[100:196, 150:246] = np.asarray(Image.fromarray(face).resize((96, 96)))
    monkeypatch.setattr(r, "detector", lambda gray: [Box(30, 20, 48, 48), Box(150, 100, 96, 96)])  # plugged in
    faces = r.predict_faces(photo)
    assert [f["box"] for f in faces] == [[150, 100, 96, 96], [30, 20, 48, 48]]
    for f in faces:
        assert f["label"] in SIX and abs(sum(f["probabilities"].values()) - 1) < 1e-3


def test_no_face_gives_an_empty_list_or_the_whole_image(trained):
    r, _ = trained
    blank = Image.new("RGB", (120, 90), (128, 128, 128))
    assert r.predict_faces(blank) == []  # the Haar cascade finds no face on a flat image
    (whole,) = r.predict_faces(blank, whole_image_if_no_face=True)
    assert whole["box"] == [0, 0, 120, 90]


def test_load_without_a_path_says_how_to_get_a_model_when_none_ships(monkeypatch, tmp_path):
    import fer.api

    monkeypatch.setitem(fer.api.SHIPPED_MODELS, "fer2013", tmp_path / "missing.ckpt")
    with pytest.raises(FileNotFoundError, match="No 'fer2013' model at .*configs/vgg_half.yaml"):
        EmotionRecognizer.load()


def test_an_unknown_model_name_lists_the_shipped_ones(tmp_path, monkeypatch):
    from fer.cli import main

    with pytest.raises(ValueError, match="Unknown model 'ferplsu'.*fer2013, ferplus"):
        EmotionRecognizer.load("ferplsu")
    with pytest.raises(ValueError, match="Unknown model 'fastest'"):
        main(["detect", str(tmp_path), "--ckpt", "fastest"])
    with pytest.raises(FileNotFoundError):  # a path, however short, is a path
        EmotionRecognizer.load("missing.ckpt")


def test_the_shipped_model_loads_without_a_path_and_reads_a_face(tiny_tree):
    import fer.api
    from fer.runs import SHIPPED_WEIGHTS

    assert fer.api.SHIPPED_MODELS[fer.api.DEFAULT_MODEL].stat().st_size <= 20 * 2**20
    assert sum(p.stat().st_size for p in SHIPPED_WEIGHTS.iterdir()) <= 60 * 2**20  # every shipped model, in all
    r = EmotionRecognizer.load()
    assert r.emotions == list(EMOTIONS) and r.module.temperature > 0
    (face,) = r.predict_faces(tiny_tree / "test" / "happy" / "00000.png", whole_image_if_no_face=True)
    assert face["label"] in EMOTIONS and abs(sum(face["probabilities"].values()) - 1) < 1e-3


@pytest.mark.parametrize("name,emotions,backbone",
                         [("ferplus", ALL_EMOTIONS, "vgg"), ("ensemble", EMOTIONS, "ensemble"),
                          ("fast", EMOTIONS, "vgg")])
def test_every_shipped_model_loads_by_name_and_reads_a_face(name, emotions, backbone, tiny_tree):
    r = EmotionRecognizer.load(name)
    assert r.emotions == list(emotions) and r.module.hparams.backbone == backbone
    (face,) = r.predict_faces(tiny_tree / "test" / "happy" / "00000.png", whole_image_if_no_face=True)
    assert list(face["probabilities"]) == list(emotions) and abs(sum(face["probabilities"].values()) - 1) < 1e-3


def test_the_fast_model_does_at_most_a_tenth_of_a_gmac_a_face_with_its_views():
    from fer.bench import face_gmacs, forward_gmacs

    fast = face_gmacs(EmotionRecognizer.load("fast").module)
    default = EmotionRecognizer.load().module
    assert fast <= 0.1 < forward_gmacs(default.net, default.hparams.image_size) / 8


def test_detect_command_prints_json_and_writes_annotated_images(trained, tiny_tree, tmp_path, capsys):
    from fer.cli import main

    r, _ = trained
    ckpt = tmp_path / "m.ckpt"
    r.save(str(ckpt))
    folder = tiny_tree / "test" / "fear"
    main(["detect", str(folder), "--ckpt", str(ckpt), "--whole-image", "--annotate", str(tmp_path / "out")])
    printed = json.loads(capsys.readouterr().out)
    assert len(printed) == len(list(folder.glob("*.png")))
    assert all(len(item["faces"]) == 1 and item["faces"][0]["label"] in SIX for item in printed)
    annotated = Image.open(tmp_path / "out" / "00000.png")
    assert annotated.mode == "RGB" and annotated.size == (48, 48)
    main(["detect", str(folder / "00000.png"), "--ckpt", str(ckpt), "--format", "table"])
    assert "(no face)" in capsys.readouterr().out  # the Haar cascade finds no face in a cartoon
