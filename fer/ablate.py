"""``python -m fer ablate experiments/backbones.yaml``: train a list of configs under one budget and compare them.

A study file names a base config, the data, a seed, a budget (epochs and/or wall-clock minutes per run) and
the runs, each a list of extra config files and command-line overrides::

    name: backbones
    base: configs/baseline.yaml
    data_dir: data/fer2013
    seed: 42
    budget: {epochs: 5, minutes: 6}
    runs:
      - {name: baseline}
      - {name: baseline_se, configs: [configs/backbones/baseline_se.yaml]}

Runs go sequentially into one TensorBoard folder (``<out>/<study>/<run>``, which also gets the best
checkpoint's ``val_confusion_matrix.{png,json}``). A finished run (its
``result.json`` exists) is skipped; an interrupted one resumes from its ``last.ckpt``. The table
(``experiments/results/<study>.md``, sorted by validation accuracy), a CSV and a plot of accuracy against
single-image latency (bubble area = parameters) are written at the end.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt  # with no display, matplotlib falls back to its Agg backend by itself
import yaml

from fer.bench import StepTimer, forward_gmacs, inference_latency_ms
from fer.data import FERDataError
from fer.reports import write_confusion
from fer.training.lightning_cli import lightning_cli

COLUMNS = ["run", "val_acc", "val_f1", "test_acc", "test_f1", "params_m", "gmacs", "train_img_s", "latency_ms",
           "epochs", "wall_min"]


def _run_one(study: dict, run: dict, out: Path, data_dir: str | None) -> dict:
    name = run["name"]
    run_dir = out / study["name"] / name
    last = run_dir / "checkpoints" / "last.ckpt"
    budget = study.get("budget", {})
    args = ["fit", "--config", study["base"]]
    for config in run.get("configs", []):
        args += ["--config", config]
    args += [
        "--seed_everything", str(study.get("seed", 42)),
        "--trainer.logger.init_args.save_dir", str(out),
        "--trainer.logger.init_args.name", study["name"],
        "--trainer.logger.init_args.version", name,
        "--trainer.callbacks+=fer.bench.StepTimer",
    ]
    if "epochs" in budget:
        args += ["--trainer.max_epochs", str(budget["epochs"])]
    if "minutes" in budget:
        hours, minutes = divmod(int(budget["minutes"]), 60)
        args += ["--trainer.max_time", f"00:{hours:02d}:{minutes:02d}:00"]
    if data_dir or study.get("data_dir"):
        args += ["--data.data_dir", str(data_dir or study["data_dir"])]
    args += [str(a) for a in run.get("args", [])]
    if last.is_file():
        print(f"[{name}] resuming from {last}")
        args += ["--ckpt_path", str(last)]

    start = time.perf_counter()
    cli = lightning_cli(args)  # the real CLI's, in-process
    wall = time.perf_counter() - start
    trainer, model, dm = cli.trainer, cli.model, cli.datamodule
    best = trainer.checkpoint_callback.best_model_path or None
    (val,) = trainer.validate(model, dm, ckpt_path=best, verbose=False)
    write_confusion(model.last_val_confusion, model.emotions, run_dir, "val_confusion_matrix")
    result = {
        "run": name,
        "val_acc": val["val/acc"],
        "val_f1": val["val/f1"],
        "val_recall": {e: val[f"val/recall/{e}"] for e in model.emotions},
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
        "gmacs": forward_gmacs(model.net, model.hparams.image_size, model.hparams.in_chans),
        "train_img_s": next(c for c in trainer.callbacks if isinstance(c, StepTimer)).result()["images_per_s"],
        "latency_ms": inference_latency_ms(model.net, model.hparams.image_size, model.hparams.in_chans),
        "epochs": trainer.current_epoch,
        "wall_min": round(wall / 60, 2),
        "checkpoint": best,
    }
    try:
        dm.setup("test")  # loads the test split once; trainer.test below reuses it
    except FERDataError:
        pass  # no test split: validation figures only
    else:
        (test,) = trainer.test(model, dm, ckpt_path=best, verbose=False)
        result.update(test_acc=test["test/acc"], test_f1=test["test/f1"])
    (run_dir / "result.json").write_text(json.dumps(result, indent=2))
    return result


def write_report(study: dict, results: list[dict], results_dir: Path, command: str) -> Path:
    """Write ``<study>.md`` (sorted by validation accuracy), ``.csv`` and ``.png``; return the markdown path."""
    results_dir.mkdir(parents=True, exist_ok=True)
    rows = sorted(results, key=lambda r: r["val_acc"], reverse=True)
    stem = results_dir / study["name"]
    recall_columns = [f"recall_{e}" for e in rows[0]["val_recall"]]
    with open(stem.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS + recall_columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({**r, **{f"recall_{e}": v for e, v in r["val_recall"].items()}} for r in rows)

    def fmt(value) -> str:
        return "" if value is None else f"{value:.4f}" if isinstance(value, float) and value < 1 else str(value)

    budget = study.get("budget", {})
    lines = [
        f"# Study `{study['name']}`",
        "",
        f"Command: `{command}`  ",
        (f"Budget per run: {budget.get('epochs', '–')} epochs, {budget.get('minutes', '–')} minutes wall clock "
         f"(whichever ends first); seed {study.get('seed', 42)}; base config `{study['base']}`.  "),
        ("Accuracy and F1 are validation-split figures of each run's best checkpoint; latency is batch 1, fp32, "
         "1 CPU thread; MACs are one forward pass at the input size."),
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in COLUMNS) + " |" for r in rows]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for r in rows:
        ax.scatter(r["latency_ms"], r["val_acc"], s=40 + 30 * r["params_m"], alpha=0.5)
        ax.annotate(r["run"], (r["latency_ms"], r["val_acc"]), fontsize=8, ha="center", va="bottom")
    ax.set_xlabel("single-image latency, ms (1 CPU thread)")
    ax.set_ylabel("validation accuracy")
    ax.set_title(f"{study['name']}: accuracy vs latency (bubble area ∝ parameters)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(stem.with_suffix(".png"))
    plt.close(fig)
    return stem.with_suffix(".md")


def ablate(argv: Sequence[str]) -> list[dict]:
    parser = argparse.ArgumentParser(prog="fer ablate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", type=Path, help="study YAML, e.g. experiments/backbones.yaml")
    parser.add_argument("--data_dir", help="override the study's data_dir")
    parser.add_argument("--out", type=Path, default=Path("experiments/runs"), help="TensorBoard / checkpoint root")
    parser.add_argument("--results", type=Path, default=Path("experiments/results"), help="where tables go")
    args = parser.parse_args(argv)
    study = yaml.safe_load(args.study.read_text())
    missing = {"name", "base", "runs"} - set(study)
    if missing:
        raise SystemExit(f"{args.study}: missing keys {sorted(missing)}; see `python -m fer ablate --help`")
    results = []
    for run in study["runs"]:
        done = args.out / study["name"] / run["name"] / "result.json"
        if done.is_file():
            print(f"[{run['name']}] finished before; skipping")
            results.append(json.loads(done.read_text()))
            continue
        results.append(_run_one(study, run, args.out, args.data_dir))
    command = "python -m fer ablate " + " ".join(argv)
    report = write_report(study, results, args.results, command)
    print(report.read_text())
    return results
