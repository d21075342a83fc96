"""``python -m fer select-ensemble --ckpt A B C … --data_dir data/fer2013``: which trained models, averaged, answer
best on a split, within a size budget.

Each candidate's calibrated probabilities (its own normalisation, test-time views and temperature: what
``EmotionRecognizer.ensemble`` averages) are computed once on the split; then every combination of up to
``--max_members`` candidates whose fp16 weights fit ``--max_mb`` is scored with equal weights (a shipped model
takes none: an ensemble refers to its file). The table lists the best with accuracy, macro-F1, multiply-adds a
face, fp16 megabytes and, against a reference (the best single candidate, or ``--reference``: the ensemble to
beat), the faces won and lost and their sign test. Choosing on the faces that score the choice flatters the
winner: with many combinations, read its figure as an upper bound, or measure it again on other faces.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from rich.progress import track
from torchmetrics.functional.classification import multiclass_f1_score

from fer.api import EmotionRecognizer, model_path
from fer.bench import face_gmacs
from fer.data import FERDataError, FERDataModule
from fer.errors import ConfigError
from fer.runs import is_shipped
from fer.training.module import EmotionClassifier


def fp16_mb(module: EmotionClassifier) -> float:
    """Megabytes of the network's weights stored as the shipped members are: floating-point tensors in fp16."""
    return sum(t.numel() * (2 if t.is_floating_point() else t.element_size())
               for t in module.net.state_dict().values()) / 1e6


def sign_test(correct: np.ndarray, reference: np.ndarray) -> tuple[int, int, float]:
    """Faces only ``correct`` gets right, faces only ``reference`` gets right, and z = (won − lost) / √(won + lost)."""
    won, lost = int((correct & ~reference).sum()), int((~correct & reference).sum())
    return won, lost, (won - lost) / math.sqrt(won + lost) if won + lost else 0.0


def select_ensemble(argv: Sequence[str]) -> list[dict]:
    parser = argparse.ArgumentParser(prog="fer select-ensemble", description=__doc__.split("\n\n")[1])
    parser.add_argument("--ckpt", nargs="+", required=True, help="candidates: checkpoints or shipped models' names")
    parser.add_argument("--data_dir", required=True, help="the dataset whose split scores them (docs/data.md)")
    parser.add_argument("--split", default="validation", help="the split that scores them (default validation)")
    parser.add_argument("--max_members", type=int, default=3, help="most members a combination holds (default 3)")
    parser.add_argument("--max_mb", type=float, default=math.inf,
                        help="most megabytes a combination's weights take in fp16, shipped models' none "
                             "(default: no limit)")
    parser.add_argument("--reference", nargs="+", metavar="CKPT",
                        help="the candidates whose average the others are compared with (default: the best one alone)")
    parser.add_argument("--top", type=int, default=10, help="rows of the printed table (default 10)")
    parser.add_argument("--output", type=Path, help="a CSV of every combination scored")
    args = parser.parse_args(argv)
    if len(set(args.ckpt)) != len(args.ckpt):
        raise ConfigError(f"--ckpt: a candidate is listed twice in {args.ckpt}")
    if unknown := set(args.reference or []) - set(args.ckpt):
        raise ConfigError(f"--reference {' '.join(sorted(unknown))}: not among the --ckpt candidates")

    candidates, first, faces, labels = {}, None, None, None
    for name in track(args.ckpt, description="Candidates' probabilities", transient=True):
        recognizer = EmotionRecognizer.load(name, detector="haar")  # the faces come cropped: never called
        module = recognizer.module
        shape = (list(module.emotions), module.hparams.image_size, module.hparams.in_chans)
        if first is None:
            first = (name, shape)
            dm = FERDataModule(args.data_dir, emotions=shape[0], image_size=shape[1], num_workers=0)
            if (table := dm.load_split(args.split)) is None:
                raise FERDataError(f"{args.data_dir}: no {args.split} split")
            known = table.labels >= 0  # faces of emotions the models do not know are left out
            faces, labels = table.images[known].numpy(), table.labels[known].numpy()
        elif shape != first[1]:
            raise ConfigError(f"{name}: emotions, image size and channels {shape} differ from {first[0]}'s "
                              f"{first[1]}; an ensemble's members share them")
        candidates[name] = {"probs": recognizer.face_probabilities(faces), "gmacs": face_gmacs(module),
                            "mb": 0.0 if is_shipped(model_path(name)) else fp16_mb(module)}

    n_classes, target = len(first[1][0]), torch.from_numpy(labels)
    correct = {name: c["probs"].argmax(1) == labels for name, c in candidates.items()}
    reference = args.reference or [max(candidates, key=lambda name: correct[name].mean())]
    reference_right = np.mean([candidates[m]["probs"] for m in reference], axis=0).argmax(1) == labels
    rows = []
    for size in range(1, min(args.max_members, len(candidates)) + 1):
        for members in itertools.combinations(candidates, size):
            mb = sum(candidates[m]["mb"] for m in members)
            if mb > args.max_mb:
                continue
            predicted = np.mean([candidates[m]["probs"] for m in members], axis=0).argmax(1)
            right = predicted == labels
            won, lost, z = sign_test(right, reference_right)
            f1 = multiclass_f1_score(torch.from_numpy(predicted), target, n_classes, average="macro")
            gmacs = sum(candidates[m]["gmacs"] for m in members)
            rows.append({"members": " + ".join(members), "accuracy": round(float(right.mean()), 4),
                         "macro_f1": round(float(f1), 4), "gmacs": round(gmacs, 3), "fp16_mb": round(mb, 1),
                         "won": won, "lost": lost, "z": round(z, 2)})
    if not rows:
        raise ConfigError(f"--max_mb {args.max_mb}: no candidate fits (the smallest takes "
                          f"{min(c['mb'] for c in candidates.values()):.1f} MB)")
    rows.sort(key=lambda row: -row["accuracy"])
    print(f"{len(rows)} combinations of {len(candidates)} candidates on {len(labels)} {args.split} faces; won/lost/z: "
          f"against {' + '.join(reference)} ({reference_right.mean():.4f})")
    print("| " + " | ".join(rows[0]) + " |\n|" + "---|" * len(rows[0]))
    for row in rows[:args.top]:
        print("| " + " | ".join(str(v) for v in row.values()) + " |")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        with args.output.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return rows
