import numpy as np
import onnxruntime as ort
import pytest
import torch

from fer import EmotionRecognizer
from fer.cli import main
from fer.emotions import ALL_EMOTIONS, EMOTIONS
from fer.errors import ConfigError


def member(path, backbone, temperature, seed, emotions=EMOTIONS, **kwargs):
    """An untrained model with its own normalisation, views and temperature, saved as a checkpoint."""
    torch.manual_seed(seed)
    recognizer = EmotionRecognizer(backbone=backbone, emotions=list(emotions), **kwargs)
    recognizer.module.temperature = temperature
    recognizer.save(str(path))
    return path


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ensemble")
    return [member(folder / "a.ckpt", "vgg_half", 0.7, 0, normalize=(0.5, 0.25), tta_flip=True),
            member(folder / "b.ckpt", "baseline_bn", 1.6, 1)]


@pytest.fixture(scope="module")
def faces():
    return torch.rand(5, 1, 48, 48, generator=torch.Generator().manual_seed(0))


def probabilities(path, faces) -> torch.Tensor:
    with torch.inference_mode():
        return EmotionRecognizer.load(str(path)).module.eval().probabilities(faces)


def test_an_ensemble_is_the_weighted_mean_of_its_members_calibrated_probabilities(members, faces, tmp_path):
    ensemble = EmotionRecognizer.ensemble(members, weights=[1, 3])
    with torch.inference_mode():
        mixed = ensemble.module.probabilities(faces)
    expected = 0.25 * probabilities(members[0], faces) + 0.75 * probabilities(members[1], faces)
    assert torch.allclose(mixed, expected, atol=1e-5)
    assert ensemble.emotions == list(EMOTIONS)
    ensemble.save(str(tmp_path / "ensemble.ckpt"))  # one file loads back as the same model
    assert torch.allclose(probabilities(tmp_path / "ensemble.ckpt", faces), expected, atol=1e-5)


def test_an_ensemble_exports_to_one_onnx_graph(members, faces, tmp_path):
    written = main(["export", "--ckpt", *map(str, members), "--weights", "1", "3", "--output",
                    str(tmp_path / "ensemble.onnx")])
    session = ort.InferenceSession(str(written), providers=["CPUExecutionProvider"])
    on_onnx = session.run(None, {"image": faces.numpy()})[0]
    expected = 0.25 * probabilities(members[0], faces) + 0.75 * probabilities(members[1], faces)
    assert np.abs(on_onnx - expected.numpy()).max() <= 1e-4
    assert EmotionRecognizer.load(str(written)).emotions == list(EMOTIONS)


def test_tta_flip_on_export_sets_every_members_mirror_view(members, faces, tmp_path):
    written = main(["export", "--ckpt", *map(str, members), "--tta_flip", "false", "--output",
                    str(tmp_path / "ensemble.onnx")])
    on_onnx = ort.InferenceSession(str(written)).run(None, {"image": faces.numpy()})[0]
    plain = []
    for path in members:
        module = EmotionRecognizer.load(str(path)).module.eval()
        module.hparams.tta_flip = False
        with torch.inference_mode():
            plain.append(module.probabilities(faces))
    off = np.abs(on_onnx - (0.5 * plain[0] + 0.5 * plain[1]).numpy()).max()
    with_mirror = 0.5 * probabilities(members[0], faces) + 0.5 * probabilities(members[1], faces)
    assert off <= 1e-4 and np.abs(on_onnx - with_mirror.numpy()).max() > 10 * max(off, 1e-6)  # a's mirror is gone


def test_a_member_with_other_emotions_is_refused_by_name(members, tmp_path, capsys):
    eight = member(tmp_path / "ferplus_like.ckpt", "vgg_half", 1.0, 2, emotions=ALL_EMOTIONS)
    with pytest.raises(ConfigError, match="ferplus_like.ckpt has emotions .*contempt.*a.ckpt has"):
        EmotionRecognizer.ensemble([members[0], eight])
    with pytest.raises(ValueError, match="Unknown model 'fastest'"):
        EmotionRecognizer.ensemble([members[0], "fastest"])
    with pytest.raises(SystemExit):
        main(["export", "--ckpt", *map(str, members), "--weights", "1"])
    assert "needs --output" in capsys.readouterr().err
