"""``python -m fer evaluate [--ckpt …] DATASET…``: a trained model on other datasets, a row each.

Any layout ``data.data_dir`` reads (docs/data.md) is a dataset. A dataset's faces are compared on the emotions it
shares with the model; faces of emotions the model does not know are left out and counted. ``--shared-only`` also
keeps the model from answering an emotion the dataset does not have.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from fer.api import EmotionRecognizer, add_model_options, load_recognizer
from fer.data import FERDataError, FERDataModule
from fer.emotions import ALL_EMOTIONS
from fer.reports import confusion_figure


def evaluate_dataset(recognizer: EmotionRecognizer, data_dir: str, split: str = "auto",
                     shared_only: bool = False) -> dict:
    """Accuracy, macro-F1, per-class recall and the confusion matrix of ``recognizer`` on one split of a dataset
    (``auto``: its test split, else validation), on the emotions the two share."""
    dm = FERDataModule(data_dir, emotions=list(ALL_EMOTIONS), image_size=recognizer.image_size, num_workers=0)
    splits = ["test", "validation"] if split == "auto" else [split]
    table = next(((s, t) for s in splits if (t := dm.load_split(s)) is not None), None)
    if table is None:
        raise FERDataError(f"{data_dir}: no {' or '.join(splits)} split")
    split, table = table
    present = [e for e, n in zip(ALL_EMOTIONS, np.bincount(table.labels.numpy(), minlength=len(ALL_EMOTIONS))) if n]
    shared = [e for e in present if e in recognizer.emotions]
    if not shared:
        raise FERDataError(f"{data_dir}: its emotions {present} share none with the model's {recognizer.emotions}")
    true_names = [ALL_EMOTIONS[i] for i in table.labels.tolist()]
    inside = np.array([name in shared for name in true_names])
    left_out = {e: int(sum(1 for n in true_names if n == e)) for e in present if e not in shared}
    probs = recognizer.face_probabilities(table.images.numpy()[inside])
    if shared_only:
        probs = np.where([e in shared for e in recognizer.emotions], probs, -1.0)
    predicted = probs.argmax(1)
    truth = np.array([recognizer.emotions.index(n) for n, keep in zip(true_names, inside) if keep])
    confusion = np.zeros((len(shared), len(recognizer.emotions)), np.int64)
    for t, p in zip(truth, predicted):
        confusion[shared.index(recognizer.emotions[t]), p] += 1
    recall, f1 = {}, []
    for row, emotion in enumerate(shared):
        column = recognizer.emotions.index(emotion)
        hits, answered = confusion[row, column], confusion[:, column].sum()
        recall[emotion] = hits / max(1, confusion[row].sum())
        precision = hits / max(1, answered)
        f1.append(2 * precision * recall[emotion] / max(1e-9, precision + recall[emotion]))
    return {
        "dataset": data_dir, "split": split, "faces": int(inside.sum()), "emotions": shared,
        "left_out": {f"{e} (the model has no such class)": n for e, n in left_out.items()},
        "shared_only": shared_only, "accuracy": round(float((predicted == truth).mean()), 4),
        "macro_f1": round(float(np.mean(f1)), 4),
        "per_class_recall": {e: round(float(r), 4) for e, r in recall.items()},
        "confusion_matrix": {"rows": shared, "columns": list(recognizer.emotions), "counts": confusion.tolist()},
    }


def evaluate_command(argv: Sequence[str]) -> list[dict]:
    parser = argparse.ArgumentParser(prog="fer evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("datasets", nargs="+", help="data folders (or files) in any layout of docs/data.md")
    add_model_options(parser)
    parser.add_argument("--split", default="auto", choices=["auto", "train", "validation", "test"],
                        help="which split to evaluate (auto: test, else validation)")
    parser.add_argument("--shared-only", action="store_true",
                        help="let the model answer only emotions the dataset has")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--plots", type=Path, help="also write each dataset's confusion matrix here, as a PNG")
    args = parser.parse_args(argv)
    recognizer = load_recognizer(args)
    rows = [evaluate_dataset(recognizer, d, args.split, args.shared_only) for d in args.datasets]
    print(f"{'dataset':40} {'split':10} {'faces':>6} {'left out':>8} {'accuracy':>8} {'macro-F1':>8}  "
          "recall per emotion")
    for r in rows:
        recall = " ".join(f"{e[:4]} {v:.2f}" for e, v in r["per_class_recall"].items())
        print(f"{r['dataset'][-40:]:40} {r['split']:10} {r['faces']:>6} {sum(r['left_out'].values()):>8} "
              f"{r['accuracy']:>8.4f} {r['macro_f1']:>8.4f}  {recall}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    for r in rows if args.plots else []:
        args.plots.mkdir(parents=True, exist_ok=True)
        confusion = r["confusion_matrix"]
        title = f"{Path(r['dataset']).name} {r['split']}: accuracy {r['accuracy']:.2%}, macro-F1 {r['macro_f1']:.3f}"
        figure = confusion_figure(torch.tensor(confusion["counts"]), confusion["rows"], title, confusion["columns"])
        figure.savefig(args.plots / f"{Path(r['dataset']).name}_{r['split']}_confusion.png")
        plt.close(figure)
    return rows
