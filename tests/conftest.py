from pathlib import Path

import pytest

from fer import EmotionRecognizer
from fer.api import openvino_cpu_device
from fer.cli import main
from fer.data.synthetic import make_synthetic_dataset
from fer.emotions import EMOTIONS

SIX = [e for e in EMOTIONS if e != "disgust"]


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Keep generated data and decoded-image caches out of the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FER_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "fer-cache"))
        yield


@pytest.fixture(scope="session")
def tiny_tree(tmp_path_factory) -> Path:
    """A seeded synthetic {train,validation,test}/<emotion>/*.png tree: 60 train faces per emotion."""
    return make_synthetic_dataset(tmp_path_factory.mktemp("data") / "tiny", samples_per_class=60, seed=1)


def cli_args(out: Path, *extra: str) -> list[str]:
    # The seed's CNN has no BatchNorm and needs a few hundred steps on ~1,800 faces to leave chance level,
    # so this is the quickstart itself (under 3 minutes on any 2-core CPU), not a smaller tree.
    return [
        "--config", "configs/quickstart.yaml",
        "--data.num_workers", "0",
        "--trainer.default_root_dir", str(out),
        "--trainer.logger.init_args.save_dir", str(out),
        *extra,
    ]


@pytest.fixture(scope="session")
def fitted(tmp_path_factory):
    """The quickstart, shortened: one real CLI fit shared by the tests that need a trained model."""
    out = tmp_path_factory.mktemp("runs")
    cli = main(["fit", *cli_args(out)])
    return cli, out


@pytest.fixture(scope="session")
def trained(tiny_tree, tmp_path_factory):
    """A recognizer briefly trained on six emotions (not disgust) through the Python API, and its log folder."""
    out = tmp_path_factory.mktemp("api")
    r = EmotionRecognizer(emotions=SIX, drop_rate=0.1, normalize=(0.5, 0.25))
    r.train(str(tiny_tree / "train"), str(tiny_tree / "validation"), epochs=2, batch_size=16, log_dir=str(out),
            limit_train_batches=4, enable_progress_bar=False)
    return r, out


@pytest.fixture(scope="session")
def needs_openvino():
    """Skips the test unless ONNX Runtime's OpenVINO plugin is installed and drives this CPU (it offers none on AMD)."""
    try:
        openvino_cpu_device()
    except (ImportError, RuntimeError) as error:
        assert "provider 'openvino'" in str(error)  # the reason names the option
        pytest.skip(str(error))
