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


def test_a_shipped_member_is_saved_as_a_reference_to_its_file(members, faces, tiny_tree, tmp_path, monkeypatch):
    import shutil

    import fer.runs
    from fer.errors import RunError
    from fer.select_ensemble import fp16_mb

    shipped = tmp_path / "weights"
    shipped.mkdir()
    monkeypatch.setattr(fer.runs, "SHIPPED_WEIGHTS", shipped)
    EmotionRecognizer.load(str(members[0])).save(str(shipped / "a_shipped.ckpt"), half=True)  # as models ship
    ensemble = EmotionRecognizer.ensemble([shipped / "a_shipped.ckpt", members[1]], weights=[1, 3])
    with torch.inference_mode():
        expected = ensemble.module.probabilities(faces)
    ensemble.save(str(tmp_path / "ensemble.ckpt"), half=True)
    stored = torch.load(tmp_path / "ensemble.ckpt", weights_only=False)["state_dict"]
    prefixes = {k.split(".")[2] for k in stored if k.startswith("net.members.")}
    assert prefixes == {"1"}  # a's weights are its shipped file's: not copied
    assert torch.allclose(probabilities(tmp_path / "ensemble.ckpt", faces), expected, atol=1e-3)  # b in fp16 now

    with torch.no_grad():  # a member changed after loading keeps its own weights: nothing is lost
        next(ensemble.module.net.members[0].parameters()).add_(1.0)
        changed = ensemble.module.probabilities(faces)
    ensemble.save(str(tmp_path / "changed.ckpt"))
    assert torch.allclose(probabilities(tmp_path / "changed.ckpt", faces), changed, atol=1e-5)

    b_mb = fp16_mb(EmotionRecognizer.load(str(members[1])).module)  # the pair adds b's weights alone to a package
    rows = main(["select-ensemble", "--ckpt", str(shipped / "a_shipped.ckpt"), str(members[1]), "--data_dir",
                 str(tiny_tree), "--max_mb", str(b_mb + 0.01)])
    assert {row["members"]: row["fp16_mb"] for row in rows}[f"{shipped / 'a_shipped.ckpt'} + {members[1]}"] == \
        round(b_mb, 1)

    shutil.copy(members[1], shipped / "a_shipped.ckpt")  # another file under the same name
    with pytest.raises(RunError, match="a_shipped.ckpt, but that file is not the one the ensemble was built with"):
        EmotionRecognizer.load(str(tmp_path / "ensemble.ckpt"))
    (shipped / "a_shipped.ckpt").unlink()
    with pytest.raises(RunError, match="a_shipped.ckpt, which is not installed"):
        EmotionRecognizer.load(str(tmp_path / "ensemble.ckpt"))


def test_a_member_with_other_emotions_is_refused_by_name(members, tmp_path, capsys):
    eight = member(tmp_path / "ferplus_like.ckpt", "vgg_half", 1.0, 2, emotions=ALL_EMOTIONS)
    with pytest.raises(ConfigError, match="ferplus_like.ckpt has emotions .*contempt.*a.ckpt has"):
        EmotionRecognizer.ensemble([members[0], eight])
    with pytest.raises(ValueError, match="Unknown model 'fastest'"):
        EmotionRecognizer.ensemble([members[0], "fastest"])
    with pytest.raises(SystemExit):
        main(["export", "--ckpt", *map(str, members), "--weights", "1"])
    assert "needs --output" in capsys.readouterr().err


def test_select_ensemble_scores_every_combination_that_fits_against_the_best_single_model(members, tiny_tree,
                                                                                         tmp_path, capsys):
    from fer.data import FERDataModule
    from fer.select_ensemble import fp16_mb

    third = member(tmp_path / "c.ckpt", "vgg_half", 1.0, 3)
    candidates = [*map(str, members), str(third)]
    sizes = {c: fp16_mb(EmotionRecognizer.load(c).module) for c in candidates}
    budget = sizes[candidates[0]] + sizes[candidates[2]] + 0.01  # a and c together fit, nothing larger with a or b
    rows = main(["select-ensemble", "--ckpt", *candidates, "--data_dir", str(tiny_tree), "--max_members", "2",
                 "--max_mb", str(budget), "--output", str(tmp_path / "pick.csv")])
    table = FERDataModule(str(tiny_tree), num_workers=0).load_split("validation")
    probs = {c: probabilities(c, table.images[:, None].float() / 255).numpy() for c in candidates}
    right = {c: p.argmax(1) == table.labels.numpy() for c, p in probs.items()}
    fitting = {c for c in candidates if sizes[c] <= budget}
    pairs = {f"{a} + {b}" for i, a in enumerate(candidates) for b in candidates[i + 1:]
             if sizes[a] + sizes[b] <= budget}
    assert {row["members"] for row in rows} == fitting | pairs and f"{candidates[0]} + {candidates[2]}" in pairs
    assert [row["accuracy"] for row in rows] == sorted((row["accuracy"] for row in rows), reverse=True)
    best = max(candidates, key=lambda c: right[c].mean())  # the reference, whether or not it fits
    for row in rows:
        names = row["members"].split(" + ")
        mean = np.mean([probs[c] for c in names], axis=0)  # equal weights of calibrated probabilities
        correct = mean.argmax(1) == table.labels.numpy()
        assert row["accuracy"] == round(float(correct.mean()), 4) and row["fp16_mb"] <= budget
        assert (row["won"], row["lost"]) == ((correct & ~right[best]).sum(), (~correct & right[best]).sum())
    assert f"against {best} (" in capsys.readouterr().out
    assert len((tmp_path / "pick.csv").read_text().splitlines()) == len(rows) + 1

    pair = candidates[:2]  # the ensemble to beat, whether or not it fits
    rows = main(["select-ensemble", "--ckpt", *candidates, "--data_dir", str(tiny_tree), "--reference", *pair])
    reference = np.mean([probs[c] for c in pair], axis=0).argmax(1) == table.labels.numpy()
    for row in rows:
        correct = np.mean([probs[c] for c in row["members"].split(" + ")], axis=0).argmax(1) == table.labels.numpy()
        assert (row["won"], row["lost"]) == ((correct & ~reference).sum(), (~correct & reference).sum())
    pair_row = next(row for row in rows if row["members"] == " + ".join(pair))
    assert pair_row["won"] == pair_row["lost"] == 0 and pair_row["z"] == 0

    eight = member(tmp_path / "ferplus_like.ckpt", "vgg_half", 1.0, 2, emotions=ALL_EMOTIONS)
    with pytest.raises(SystemExit, match="ferplus_like.ckpt: emotions"):
        main(["select-ensemble", "--ckpt", candidates[0], str(eight), "--data_dir", str(tiny_tree)])
