from pathlib import Path

import pytest

from fer.data.synthetic import make_synthetic_dataset


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Keep generated data and decoded-image caches out of the user's ~/.cache."""
    monkeypatch.setenv("FER_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "fer-cache"))


@pytest.fixture(scope="session")
def tiny_tree(tmp_path_factory) -> Path:
    """A seeded synthetic {train,validation,test}/<emotion>/*.png tree: 60 train faces per emotion."""
    return make_synthetic_dataset(tmp_path_factory.mktemp("data") / "tiny", samples_per_class=60, seed=1)
