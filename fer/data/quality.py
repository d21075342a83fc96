"""Cheap data-quality facts: exact-duplicate faces within a split and across splits."""

from __future__ import annotations

import hashlib
from collections import Counter

from fer.data.reading import FaceTable


def _digests(table: FaceTable) -> list[str]:
    return [hashlib.sha1(face.numpy().tobytes()).hexdigest() for face in table.images]


def duplicates(tables: dict[str, FaceTable]) -> dict:
    """For each split, how many of its faces are exact copies of another face of the split (pixel for pixel, as
    decoded), and for each pair of splits, how many faces of the later one also appear in the earlier one; with
    how many of those copies carry another label (within a split: how many faces have copies of several labels)."""
    digests = {split: _digests(table) for split, table in tables.items()}
    report: dict = {"within": {}, "across": {}}
    for split, ds in digests.items():
        counts = Counter(ds)
        labels: dict[str, set[int]] = {}
        for d, label in zip(ds, tables[split].labels.tolist()):
            labels.setdefault(d, set()).add(label)
        report["within"][split] = {
            "faces": len(ds),
            "copies": sum(n - 1 for n in counts.values() if n > 1),
            "copied_faces_with_several_labels": sum(1 for d, n in counts.items() if n > 1 and len(labels[d]) > 1),
        }
    names = list(digests)
    for i, earlier in enumerate(names):
        label_of: dict[str, set[int]] = {}
        for d, label in zip(digests[earlier], tables[earlier].labels.tolist()):
            label_of.setdefault(d, set()).add(label)
        for later in names[i + 1:]:
            shared = [(d, label) for d, label in zip(digests[later], tables[later].labels.tolist()) if d in label_of]
            report["across"][f"{later} in {earlier}"] = {
                "faces": len(shared),
                "with_another_label": sum(1 for d, label in shared if label not in label_of[d]),
            }
    return report
