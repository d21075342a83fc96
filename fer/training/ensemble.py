"""Trained models as one ``EmotionClassifier`` whose network is an ``Ensemble`` (fer.models.ensemble)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fer.errors import ConfigError
from fer.models.ensemble import MEMBER_KEYS
from fer.runs import check_checkpoint, shipped_reference
from fer.training.module import EmotionClassifier


def ensemble_of(checkpoints: Sequence[str | Path], weights: Sequence[float] | None = None) -> EmotionClassifier:
    """The weighted mean of the calibrated probabilities of the models in ``checkpoints`` (default: equal
    weights), as one model: each member keeps its checkpoint's normalisation, test-time views and temperature.
    Members must predict the same emotions in the same order, from faces of the same size. A member that is a
    shipped model is saved as a reference to its file, not as a second copy of its weights."""
    members, nets, first = [], [], None
    for path in checkpoints:
        model = EmotionClassifier.load_from_checkpoint(check_checkpoint(path), map_location="cpu", weights_only=False)
        hp = model.hparams
        shape = {"emotions": model.emotions, "image_size": hp.image_size, "in_chans": hp.in_chans}
        first = first or (path, shape)
        for key, value in shape.items():
            if value != first[1][key]:
                raise ConfigError(f"ensemble: {path} has {key} {value}, {first[0]} has {first[1][key]}: members "
                                  "must share their emotions (in the same order), image size and channels")
        if hp.backbone == "ensemble":
            raise ConfigError(f"ensemble: {path} is an ensemble already; list its members instead")
        members.append({**{k: hp[k] for k in sorted(MEMBER_KEYS) if k in hp}, "temperature": float(model.temperature),
                        **shipped_reference(path)})
        nets.append(model.net)
    if not members:
        raise ConfigError("ensemble: expected at least one checkpoint")
    module = EmotionClassifier(backbone="ensemble", **first[1], drop_rate=0.0, calibrate=False,
                               backbone_kwargs={"members": members, "weights": None if weights is None else
                                                list(weights)})
    for net, trained in zip(module.net.members, nets):
        net.load_state_dict(trained.state_dict())
    return module.eval()
