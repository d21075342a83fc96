"""``python -m fer ablate experiments/backbones.yaml``: train a list of configs under one budget and compare them.

A study file names a base config, the data, the seeds, a budget (epochs and/or wall-clock minutes per run) and
the runs, each a list of extra config files and command-line overrides (``base`` may be a list of configs, stacked)::

    name: backbones
    base: [configs/fer2013_vgg/common.yaml, configs/study/recipe.yaml]
    data_dir: data/fer2013
    seeds: [42, 43]
    budget: {epochs: 30, minutes: 90}
    args: [--data.num_workers, "2"]                        # overrides every run shares (optional)
    runs:
      - {name: vgg_half, args: [--model.backbone, vgg_half]}
      - {name: no_ema, configs: [configs/study/no_ema.yaml]}
      - {name: seed_recipe, base: configs/baseline.yaml}   # a run may replace the study's base
    reference: vgg_half                                    # the run the others are counted against (optional)

Every run trains once a seed, into one TensorBoard folder (``<out>/<study>/<run>/seed<N>``), which also gets the
best checkpoint's ``val_confusion_matrix.{png,json}`` and the run's ``result.json`` (its figures, budget, wall time
summed over its sittings and kept per machine, the facts of the machine it finished on; for a model with test-time
views, its accuracy with one view too). A run with a ``result.json`` is finished and kept, on whatever machine it
ran; an interrupted one resumes from its ``last.ckpt`` (without one, it starts again). ``--runs`` and ``--seeds``
train a subset; ``--report`` only writes the report of the runs finished so far; ``--retime`` first times the
finished runs' networks again, all in turns on this machine, so the latency column compares like with like. The
report (``experiments/results/<study>.md``): a table sorted by validation accuracy (mean over seeds, with the 95%
interval the validation set's size allows), per-class recall, the machines; a CSV of every run and seed; plots of
accuracy against MACs and against latency (``.png``, where the runs' networks differ in MACs), of each run's gap to
the reference run (the best, unless the study names one; ``_gaps.png``) and of per-class recall (``_recall.png``).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt  # with no display, matplotlib falls back to its Agg backend by itself
import numpy as np
import torch
import yaml
from adjustText import adjust_text

from fer.bench import FitClock, StepTimer, forward_gmacs, inference_latency_ms, interleaved_latency_ms, torch_threads
from fer.data import FERDataError
from fer.hardware import machine_facts, machine_label
from fer.reports import write_confusion
from fer.training import EmotionClassifier
from fer.training.lightning_cli import lightning_cli

COLUMNS = ["run", "seed", "val_acc", "val_acc_1view", "val_f1", "test_acc", "test_f1", "params_m", "gmacs",
           "train_img_s", "latency_ms", "epochs", "wall_min", "machine"]
# The hyper-parameters that shape a run's network (the rest are its training's).
NET_KEYS = ("backbone", "emotions", "image_size", "in_chans", "drop_rate", "backbone_kwargs", "channels_last")


def load_study(path: Path) -> dict:
    """The study file, checked; ``seed: N`` is read as ``seeds: [N]``, and the study's and the runs' ``base`` as
    lists of configs."""
    study = yaml.safe_load(path.read_text())
    missing = {"name", "base", "runs"} - set(study or {})
    if missing:
        raise SystemExit(f"{path}: missing keys {sorted(missing)}; see `python -m fer ablate --help`")
    study["seeds"] = [int(s) for s in study.get("seeds", [study.get("seed", 42)])]
    for entry in [study, *(run for run in study["runs"] if "base" in run)]:
        entry["base"] = [entry["base"]] if isinstance(entry["base"], str) else list(entry["base"])
    names = [run["name"] for run in study["runs"]]
    if len(set(names)) != len(names):
        raise SystemExit(f"{path}: run names must be unique, got {names}")
    if study.get("reference", names[0]) not in names:
        raise SystemExit(f"{path}: reference {study['reference']!r} is not one of its runs ({', '.join(names)})")
    return study


def run_dir(out: Path, study: dict, name: str, seed: int) -> Path:
    return out / study["name"] / name / f"seed{seed}"


def run_args(study: dict, run: dict, seed: int, out: Path, data_dir: str | None = None) -> list[str]:
    """The ``fit`` command line of one run and seed: the study's base configs (or the run's own ``base``), the
    run's configs, the budget, the study's overrides, the run's last (so a run may change the budget, say)."""
    budget = study.get("budget", {})
    args = ["fit"]
    for config in run.get("base", study["base"]) + run.get("configs", []):
        args += ["--config", config]
    args += [
        "--seed_everything", str(seed),
        "--trainer.logger.init_args.save_dir", str(out),
        "--trainer.logger.init_args.name", study["name"],
        "--trainer.logger.init_args.version", f"{run['name']}/seed{seed}",
        "--trainer.callbacks+=fer.bench.StepTimer",
        "--trainer.callbacks+=fer.bench.FitClock",
    ]
    if "epochs" in budget:
        args += ["--trainer.max_epochs", str(budget["epochs"])]
    if "minutes" in budget:
        hours, minutes = divmod(int(budget["minutes"]), 60)
        args += ["--trainer.max_time", f"00:{hours:02d}:{minutes:02d}:00"]
    if data_dir or study.get("data_dir"):
        args += ["--data.data_dir", str(data_dir or study["data_dir"])]
    return args + [str(a) for a in study.get("args", []) + run.get("args", [])]


def _run_one(study: dict, run: dict, seed: int, out: Path, data_dir: str | None) -> dict:
    name, folder = run["name"], run_dir(out, study, run["name"], seed)
    last = folder / "checkpoints" / "last.ckpt"
    args = run_args(study, run, seed, out, data_dir)
    if last.is_file():
        print(f"[{name} seed {seed}] resuming from {last}")
        args += ["--ckpt_path", str(last)]
    elif stale := sorted(folder.glob("events.out.tfevents.*")):
        # An earlier sitting whose checkpoint is gone (run folders travel without them) cannot go on: the run
        # starts again, and that sitting's curves go, so TensorBoard shows the run once.
        print(f"[{name} seed {seed}] no {last} to resume from: starting again; removing the earlier sitting's "
              f"TensorBoard logs ({len(stale)} file(s))")
        for path in stale:
            path.unlink()

    cli = lightning_cli(args)  # the real CLI's, in-process
    trainer, model, dm = cli.trainer, cli.model, cli.datamodule
    best = trainer.checkpoint_callback.best_model_path or None
    # Read before validating: restoring the best checkpoint restores the clock's state as of that epoch.
    spent = next(c for c in trainer.callbacks if isinstance(c, FitClock)).by_machine()
    (val,) = trainer.validate(model, dm, ckpt_path=best, verbose=False)
    write_confusion(model.last_val_confusion, model.emotions, folder, "val_confusion_matrix")
    correct = "".join("01"[int(hit)] for hit in model.last_val_correct)
    result = {
        "run": name,
        "seed": seed,
        "val_acc": val["val/acc"],
        "val_f1": val["val/f1"],
        "val_faces": len(correct),  # the faces judged (all of the split unless limit_val_batches)
        "val_recall": {e: val[f"val/recall/{e}"] for e in model.emotions},
        "val_correct": correct,  # face by face, in the validation split's order: `paired_gap`
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
        "gmacs": forward_gmacs(model.net, model.hparams.image_size, model.hparams.in_chans),
        "train_img_s": next(c for c in trainer.callbacks if isinstance(c, StepTimer)).result()["images_per_s"],
        "latency_ms": inference_latency_ms(model.net, model.hparams.image_size, model.hparams.in_chans),
        "epochs": trainer.current_epoch,
        "budget": {**study.get("budget", {}), "epochs": trainer.max_epochs},  # the run's own, if it sets one
        "wall_min": round(sum(spent.values()) / 60, 2),
        "wall_min_by_machine": {machine: round(sec / 60, 2) for machine, sec in spent.items()},
        "machine": machine_facts(),
    }
    try:
        dm.setup("test")  # loads the test split once; trainer.test below reuses it
    except FERDataError:
        pass  # no test split: validation figures only
    else:
        (test,) = trainer.test(model, dm, ckpt_path=best, verbose=False)
        result.update(test_acc=test["test/acc"], test_f1=test["test/f1"])
    result["val_acc_1view"] = result["val_acc"]
    views = model.hparams
    if views.tta_flip or views.tta_shift or views.tta_crop:  # what the views add, at one view's cost
        views.tta_flip, views.tta_shift, views.tta_crop = False, 0, 0
        (one,) = trainer.validate(model, dm, ckpt_path=best, verbose=False)
        result["val_acc_1view"] = one["val/acc"]
    (folder / "result.json").write_text(json.dumps(result, indent=2))
    return result


def retime(folders: Sequence[Path], calls: int = 50) -> None:
    """Time the networks of finished runs again, in turns on this machine (``interleaved_latency_ms``), into each
    ``result.json``'s ``latency_ms`` and ``latency_machine``.

    A run's own latency is timed on whatever machine finished it, under whatever else ran there at the time;
    timing them together on one quiet machine makes the column comparable. The networks are rebuilt from each
    run's ``hparams.yaml``: latency does not depend on the weights."""
    calls_of = {}
    for folder in folders:
        h = yaml.safe_load((folder / "hparams.yaml").read_text())
        net = EmotionClassifier(**{key: h[key] for key in NET_KEYS if key in h}).net.eval()  # as the run built it
        x = torch.rand(1, h["in_chans"], h["image_size"], h["image_size"])
        calls_of[folder] = lambda net=net, x=x: net(x)
    with torch_threads(1), torch.inference_mode():
        timed = interleaved_latency_ms(calls_of, calls)
    for folder, t in timed.items():
        result = json.loads((folder / "result.json").read_text())
        result.update(latency_ms=round(t["p50_ms"], 3), latency_machine=machine_facts())
        (folder / "result.json").write_text(json.dumps(result, indent=2))


def ci95(acc: float, faces: int) -> float:
    """Half-width of the 95% normal interval of an accuracy measured on ``faces`` faces."""
    return 1.96 * math.sqrt(acc * (1 - acc) / faces) if faces else float("nan")


def paired_gap(row: dict, best: dict) -> tuple[float, float] | None:
    """Accuracy gap of ``row`` to ``best`` (two ``summarise`` rows) measured face by face on the same validation
    faces, and its 95% half-width; None where a run's result predates ``val_correct``. Two runs' errors are
    correlated (the same hard faces), so this interval is narrower than each accuracy's own."""
    def hits(r: dict) -> np.ndarray | None:  # each face's share of seeds that got it right
        if not all("val_correct" in s for s in r["seeds"]):
            return None
        return np.mean([np.frombuffer(s["val_correct"].encode(), np.uint8) - ord("0") for s in r["seeds"]], axis=0)

    a, b = hits(row), hits(best)
    if a is None or b is None or len(a) != len(b):
        return None
    gap = a - b
    return float(gap.mean()), 1.96 * float(gap.std(ddof=1)) / math.sqrt(len(gap))


def summarise(results: list[dict]) -> list[dict]:
    """One row a run: the mean over its seeds, sorted by validation accuracy."""
    rows = []
    for name in dict.fromkeys(r["run"] for r in results):
        seeds = [r for r in results if r["run"] == name]
        row = {k: float(np.mean([r[k] for r in seeds])) for k in
               ("val_acc", "val_f1", "params_m", "gmacs", "train_img_s", "latency_ms", "wall_min", "epochs")}
        one_view = [r.get("val_acc_1view", math.nan) for r in seeds]  # nan: a result from before it was measured
        row["val_acc_1view"] = float(np.mean(one_view))
        row.update(run=name, seeds=seeds, ci95=ci95(row["val_acc"], seeds[0].get("val_faces", 0)),
                   val_recall={e: float(np.mean([r["val_recall"][e] for r in seeds])) for e in seeds[0]["val_recall"]})
        rows.append(row)
    return sorted(rows, key=lambda r: r["val_acc"], reverse=True)


def _cost_plot(study: dict, rows: list[dict], stem: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), dpi=110, sharey=True)
    colours = plt.get_cmap("tab10" if len(rows) <= 10 else "tab20")  # a run keeps its colour on both axes
    for ax, key, label in ((axes[0], "gmacs", "GMACs a face (one forward pass)"),
                           (axes[1], "latency_ms", "single-face latency, ms (batch 1, fp32, 1 CPU thread)")):
        for i, r in enumerate(rows):
            ax.errorbar(r[key], r["val_acc"], yerr=r["ci95"], fmt="o", capsize=3, alpha=0.7,
                        color=colours(i % colours.N))
        ax.set_xscale("log")
        # Runs of one architecture family share their MACs: adjustText keeps their labels apart.
        adjust_text([ax.text(r[key], r["val_acc"], r["run"], fontsize=7) for r in rows], ax=ax,
                    arrowprops={"arrowstyle": "-", "color": "grey", "lw": 0.5})
        ax.set_xlabel(label)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("validation accuracy (mean of seeds, 95% interval)")
    fig.suptitle(f"{study['name']}: accuracy against cost")
    fig.tight_layout()
    fig.savefig(stem.with_suffix(".png"))
    plt.close(fig)


def _gap_plot(study: dict, gaps: dict[str, tuple[float, float]], reference: str, stem: Path) -> None:
    """A forest plot: each run's paired gap to ``reference`` with its 95% interval, in points."""
    names = sorted(gaps, key=lambda name: gaps[name][0])
    fig, ax = plt.subplots(figsize=(7.5, 0.4 * len(names) + 1.6), dpi=110)
    for i, name in enumerate(names):
        gap, half = (100 * v for v in gaps[name])
        ax.errorbar(gap, i, xerr=half, fmt="o", capsize=3, color="tab:blue" if abs(gap) <= half else "tab:red")
        ax.annotate(f"{gap:+.1f} ± {half:.1f}", (gap, i), fontsize=7, xytext=(0, 6), textcoords="offset points",
                    ha="center")
    ax.axvline(0, color="grey", lw=1)
    ax.set_yticks(range(len(names)), names)
    ax.set_ylim(-0.7, len(names) - 0.3)
    ax.set_xlabel("points, counted face by face, with the 95% interval (red: a real difference)")
    ax.grid(alpha=0.3, axis="x")
    ax.set_title(f"{study['name']}: validation accuracy gap to {reference}")
    fig.tight_layout()
    fig.savefig(stem.parent / f"{stem.name}_gaps.png")
    plt.close(fig)


def _recall_plot(study: dict, rows: list[dict], stem: Path) -> None:
    emotions = list(rows[0]["val_recall"])
    recall = np.array([[r["val_recall"][e] for e in emotions] for r in rows])
    fig, ax = plt.subplots(figsize=(1.1 * len(emotions) + 3, 0.35 * len(rows) + 1.5), dpi=110)
    ax.imshow(recall, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(emotions)), emotions)
    ax.set_yticks(range(len(rows)), [r["run"] for r in rows])
    for (i, j), v in np.ndenumerate(recall):
        ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="white" if v < 0.5 else "black")
    ax.set_title(f"{study['name']}: validation recall per emotion")
    fig.tight_layout()
    fig.savefig(stem.parent / f"{stem.name}_recall.png")
    plt.close(fig)


def write_report(study: dict, results: list[dict], results_dir: Path, command: str,
                 pending: Sequence[str] = ()) -> Path:
    """Write ``<study>.md``, ``.csv``, ``.png`` and ``_recall.png`` from the finished runs; return the markdown
    path. ``pending`` names the runs (``run seed N``) not finished yet."""
    results_dir.mkdir(parents=True, exist_ok=True)
    stem = results_dir / study["name"]
    def trained_on(r: dict) -> list[str]:  # every sitting's machine, or the one it finished on
        return list(r.get("wall_min_by_machine") or [machine_label(r["machine"])])

    machines = list(dict.fromkeys([m for r in results for m in trained_on(r)] +
                                  [machine_label(r.get("latency_machine", r["machine"])) for r in results]))
    short = {m: f"M{i + 1}" for i, m in enumerate(machines)}

    def machine_of(r: dict) -> str:
        return "+".join(short[m] for m in trained_on(r))

    rows = summarise(results)
    named = next((r for r in rows if r["run"] == study.get("reference")), None)  # None till it is finished
    reference = named or (rows[0] if rows else None)
    versus = f"`{named['run']}`" if named else "best"
    gaps = {r["run"]: paired_gap(r, reference) for r in rows if r is not reference}  # None: not on the same faces
    recall_columns = [f"recall_{e}" for e in results[0]["val_recall"]] if results else []
    with open(stem.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS + recall_columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({**r, "machine": machine_of(r), **{f"recall_{e}": v for e, v in r["val_recall"].items()}}
                         for row in rows for r in row["seeds"])

    timed_on = {short[machine_label(r["latency_machine"])] for r in results if "latency_machine" in r}
    latency_where = (f"timed in turns on {timed_on.pop()} (`--retime`)"
                     if len(timed_on) == 1 and all("latency_machine" in r for r in results)
                     else "timed where each run finished (`--retime` times them all together)")
    budget = study.get("budget", {})
    limits = [f"{budget[key]} {unit}" for key, unit in (("epochs", "epochs"), ("minutes", "minutes wall clock"))
              if key in budget]
    base = " + ".join(f"`{b}`" for b in study["base"])
    lines = [
        f"# Study `{study['name']}`",
        "",
        f"Command: `{command}`  ",
        (f"Budget per run: {' or '.join(limits) or 'none'}{' (whichever ends first)' * (len(limits) > 1)}; "
         f"a run's own epochs, where it sets them, in its row; seeds {', '.join(map(str, study['seeds']))}; "
         f"config {base}.  "),
        ("Accuracy and macro-F1: validation split, each run's best checkpoint, the mean over its seeds; ± is the "
         f"95% interval of an accuracy measured on this many faces; vs {versus}: the gap to "
         f"{'the top run' if versus == 'best' else versus} counted face by face on the same faces, with its 95% "
         "interval (narrower than ±: two runs miss many of the same faces), so a gap whose interval holds 0 is not "
         "a real difference (bold: the best and the runs it cannot be told from); "
         "1 view: the same checkpoints without test-time views (the mirror image), the accuracy the MACs and "
         "latency buy. Latency: batch 1, fp32, 1 CPU thread, "
         f"{latency_where}; MACs: one forward pass at the input size; training "
         "images/s on the machine the run finished on; wall time summed over a resumed run's sittings (M1+M2: "
         "sittings on both)."),
        "",
        (f"| run | val_acc | ± | vs {versus} | per seed | 1 view | val_f1 | params_m | gmacs | train_img_s "
         "| latency_ms | epochs | wall_min | machine |"),
        "|" + "---|" * 14,
    ]
    for r in rows:
        per_seed = " / ".join(f"{s['val_acc']:.4f}" for s in r["seeds"])
        where = ", ".join(dict.fromkeys(machine_of(s) for s in r["seeds"]))
        one_view = "–" if math.isnan(r["val_acc_1view"]) else f"{r['val_acc_1view']:.4f}"
        gap, to_best = gaps.get(r["run"]), paired_gap(r, rows[0])
        vs = "—" if r is reference else "–" if gap is None else f"{gap[0]:+.4f} ± {gap[1]:.4f}"
        tied = r is rows[0] or (to_best is not None and abs(to_best[0]) <= to_best[1])
        acc = f"**{r['val_acc']:.4f}**" if tied else f"{r['val_acc']:.4f}"
        lines.append(f"| {r['run']} | {acc} | {r['ci95']:.4f} | {vs} | {per_seed} | {one_view} "
                     f"| {r['val_f1']:.4f} | {r['params_m']:.3g} | {r['gmacs']:.3g} | {r['train_img_s']:.0f} "
                     f"| {r['latency_ms']:.3g} | {r['epochs']:.0f} | {r['wall_min']:.1f} | {where} |")
    if pending:
        lines += ["", f"Not finished yet ({len(pending)}): {', '.join(pending)}."]
    if rows:
        emotions = list(rows[0]["val_recall"])
        lines += ["", "Validation recall per emotion (mean over seeds):", "",
                  "| run | " + " | ".join(emotions) + " |", "|" + "---|" * (len(emotions) + 1)]
        lines += ["| " + r["run"] + " | " + " | ".join(f"{r['val_recall'][e]:.3f}" for e in emotions) + " |"
                  for r in rows]
        lines += ["", "Machines (as lscpu names them):", ""] + [f"- {short[m]}: {m}" for m in machines]
        lines.append("")
        if len({r["gmacs"] for r in rows}) > 1:  # one network trained several ways has one cost: nothing to plot
            _cost_plot(study, rows, stem)
            lines.append(f"![accuracy against cost]({stem.name}.png)")
        paired = {name: gap for name, gap in gaps.items() if gap is not None}
        if paired:
            _gap_plot(study, paired, named["run"] if named else f"the best ({reference['run']})", stem)
            lines.append(f"![gaps to {versus}]({stem.name}_gaps.png)")
        _recall_plot(study, rows, stem)
        lines.append(f"![recall]({stem.name}_recall.png)")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return stem.with_suffix(".md")


def _on_disk(folders: dict[tuple[str, int], Path]) -> tuple[list[dict], list[str]]:
    """The results finished so far, read anew (another ``ablate`` may be running other runs of the study), and the
    runs (``run seed N``) still to do, both in the study's order."""
    results, pending = [], []
    for (name, seed), folder in folders.items():
        done = folder / "result.json"
        if done.is_file():
            results.append(json.loads(done.read_text()))
        else:
            pending.append(f"{name} seed {seed}")
    return results, pending


def ablate(argv: Sequence[str]) -> list[dict]:
    parser = argparse.ArgumentParser(prog="fer ablate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", type=Path, help="study YAML, e.g. experiments/backbones.yaml")
    parser.add_argument("--data_dir", help="override the study's data_dir")
    parser.add_argument("--out", type=Path, default=Path("experiments/runs"), help="TensorBoard / checkpoint root")
    parser.add_argument("--results", type=Path, default=Path("experiments/results"), help="where tables go")
    parser.add_argument("--runs", nargs="+", metavar="NAME", help="train only these runs (default: all)")
    parser.add_argument("--seeds", nargs="+", type=int, metavar="N", help="train only these seeds (default: all)")
    parser.add_argument("--report", action="store_true", help="train nothing: report the runs finished so far")
    parser.add_argument("--retime", action="store_true",
                        help="train nothing: time the finished runs' networks again, in turns on this machine (run it "
                             "with nothing else running), then report")
    args = parser.parse_args(argv)
    study = load_study(args.study)
    names = [run["name"] for run in study["runs"]]
    for option, chosen, known in (("--runs", args.runs, names), ("--seeds", args.seeds, study["seeds"])):
        unknown = sorted(set(chosen or []) - set(known), key=str)
        if unknown:
            parser.error(f"{option} {' '.join(map(str, unknown))}: not in {args.study} (it has "
                         f"{', '.join(map(str, known))})")
    folders = {(run["name"], seed): run_dir(args.out, study, run["name"], seed)
               for run in study["runs"] for seed in study["seeds"]}
    if args.retime:
        retime([folder for folder in folders.values() if (folder / "result.json").is_file()])

    todo = [] if args.report or args.retime else [
        (run, seed) for run in study["runs"] for seed in study["seeds"]
        if run["name"] in (args.runs or names) and seed in (args.seeds or study["seeds"])
        and not (folders[run["name"], seed] / "result.json").is_file()]
    # The report names the command that regenerates all of it: --runs, --seeds, --report and --retime only choose
    # what this call trains or times.
    places = (("data_dir", args.data_dir), ("out", args.out), ("results", args.results))
    command = " ".join(["python -m fer ablate", str(args.study),
                        *(f"--{name} {value}" for name, value in places if value != parser.get_default(name))])
    for run, seed in todo:  # the report is rewritten before each run: an interruption loses none
        results, pending = _on_disk(folders)
        write_report(study, results, args.results, command, pending)
        _run_one(study, run, seed, args.out, args.data_dir)
    results, pending = _on_disk(folders)
    report = write_report(study, results, args.results, command, pending)
    print(report.read_text())
    return results
