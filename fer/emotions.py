"""The project's one canonical emotion order, and how folder names map onto it."""

from __future__ import annotations

from collections.abc import Sequence

# The seed's seven, in its order: the default classes. Every label index, checkpoint and report uses this order;
# folder order never decides it.
EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
# Every emotion a dataset may label: the seven, then contempt (FER+, AffectNet, CK+), an eighth to opt into.
ALL_EMOTIONS: tuple[str, ...] = (*EMOTIONS, "contempt")

ALIASES: dict[str, str] = {
    "anger": "angry",
    "angry": "angry",
    "disgust": "disgust",
    "disgusted": "disgust",
    "fear": "fear",
    "fearful": "fear",
    "scared": "fear",
    "happy": "happy",
    "happiness": "happy",
    "joy": "happy",
    "neutral": "neutral",
    "sad": "sad",
    "sadness": "sad",
    "surprise": "surprise",
    "surprised": "surprise",
    "contempt": "contempt",
    "contemptuous": "contempt",
}

# Label indices of the original Kaggle fer2013.csv.
FER2013_CSV_ORDER: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def canonical_emotion(name: str) -> str | None:
    """The canonical emotion a folder or label name stands for, or None if it is not one."""
    return ALIASES.get(name.strip().lower())


def check_emotions(emotions: Sequence[str]) -> list[str]:
    """Validate a configured subset of ``ALL_EMOTIONS`` and return it in canonical order."""
    resolved = []
    for name in emotions:
        canonical = canonical_emotion(name)
        if canonical is None:
            raise ValueError(f"Unknown emotion {name!r} in `emotions`; expected a subset of {list(ALL_EMOTIONS)}")
        resolved.append(canonical)
    if len(set(resolved)) != len(resolved) or len(resolved) < 2:
        raise ValueError(f"`emotions` must name at least two distinct emotions, got {list(emotions)}")
    return [e for e in ALL_EMOTIONS if e in resolved]
