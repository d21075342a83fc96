import csv
import json
from pathlib import Path

import pytest
import torch
import yaml

import fer.ablate
from fer.cli import main
from fer.hardware import machine_label
from notebooks import run_notebook

QUICK = ["--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "2", "--data.num_workers", "0",
         "--data.synthetic_samples_per_class", "30"]


def write_study(tmp_path: Path, epochs: int) -> Path:
    study = {
        "name": "tiny",
        "base": ["configs/quickstart.yaml"],
        "data_dir": "synthetic",
        "seeds": [3, 4],
        "budget": {"epochs": epochs, "minutes": 5},
        "args": QUICK,  # every run's
        "runs": [
            {"name": "baseline"},
            {"name": "se", "configs": ["configs/backbones/baseline_se.yaml"]},
            # its own base (the seed's recipe, no schedule), budget, and the mirror image as a second view
            {"name": "resnet18", "base": "configs/baseline.yaml", "configs": ["configs/backbones/resnet18.yaml"],
             "args": ["--model.tta_flip", "true", "--trainer.max_epochs", "2"]},
        ],
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def test_a_study_runs_in_parts_reports_while_incomplete_resumes_and_keeps_other_machines_runs(tmp_path, monkeypatch):
    out, results = tmp_path / "runs", tmp_path / "results"
    common = ["--out", str(out), "--results", str(results)]
    study = write_study(tmp_path, epochs=1)

    # A subset first: two runs, one seed; the report names what is still to do.
    main(["ablate", str(study), *common, "--runs", "baseline", "se", "--seeds", "3"])
    assert sorted(p.parent.relative_to(out).as_posix() for p in out.rglob("result.json")) == [
        "tiny/baseline/seed3", "tiny/se/seed3"]
    report = (results / "tiny.md").read_text()
    assert "Not finished yet (4): baseline seed 4, se seed 4, resnet18 seed 3, resnet18 seed 4" in report
    assert f"Command: `python -m fer ablate {study} --out {out} --results {results}`" in report  # the whole study's

    # A run finished on another kind of machine, copied in while the rest of the study trains, is kept as it is;
    # the report reads the results anew, so it says which machine ran what.
    moved = out / "tiny" / "se" / "seed3" / "result.json"
    other = json.loads(moved.read_text())
    other["machine"] = {**other["machine"], "cpu": "Other CPU", "family": "6", "model": "143"}
    other["wall_min_by_machine"] = {machine_label(other["machine"]): other["wall_min"]}
    train_one = fer.ablate._run_one

    def copy_in_then_train(*args):
        moved.write_text(json.dumps(other))
        return train_one(*args)

    monkeypatch.setattr(fer.ablate, "_run_one", copy_in_then_train)
    main(["ablate", str(study), *common])  # the rest of the study
    monkeypatch.setattr(fer.ablate, "_run_one", train_one)
    assert json.loads(moved.read_text())["machine"]["cpu"] == "Other CPU"
    rows = list(csv.DictReader((results / "tiny.csv").read_text().splitlines()))
    assert sorted((r["run"], r["seed"]) for r in rows) == [(n, s) for n in ("baseline", "resnet18", "se")
                                                           for s in ("3", "4")]
    for path in out.rglob("result.json"):  # each face's hit or miss, for paired comparisons
        result = json.loads(path.read_text())
        hits = result["val_correct"]
        assert len(hits) == result["val_faces"] and set(hits) <= {"0", "1"}
        assert abs(hits.count("1") / len(hits) - result["val_acc"]) < 1e-6
        last_clock = torch.load(path.parent / "checkpoints" / "last.ckpt", weights_only=False)["callbacks"]["FitClock"]
        assert result["wall_min"] * 60 >= last_clock["seconds"] - 0.6  # the whole run's, not its best epoch's
    for r in rows:
        assert 0 <= float(r["recall_disgust"]) <= 1
        assert 0 <= float(r["val_acc_1view"]) <= 1
        if r["run"] != "resnet18":  # one view: the same figure
            assert r["val_acc_1view"] == r["val_acc"]
        assert float(r["params_m"]) > 0 and float(r["gmacs"]) > 0 and float(r["latency_ms"]) > 0
    report = (results / "tiny.md").read_text()
    rows_of = report.split("| run | val_acc |")[1].split("\n\n")[0].splitlines()[2:]  # the main table's rows
    table = [line for line in rows_of if line.startswith("| ")]
    means = [float(line.split("|")[2].strip(" *")) for line in table]
    assert len(table) == 3 and means == sorted(means, reverse=True)  # one row a run, best first
    assert "Not finished" not in report and "Other CPU (family 6 model 143)" in report
    se_row = next(line for line in table if line.startswith("| se |"))
    assert "M1, M2" in se_row or "M2, M1" in se_row  # its two seeds ran on two machines
    assert "| run | angry | disgust |" in report  # per-class recall
    versus = {line.split("|")[1].strip(): line.split("|")[4].strip() for line in table}  # the gap to the best
    faces = {name: json.loads((out / "tiny" / name / "seed3" / "result.json").read_text())["val_faces"]
             for name in versus}
    assert faces["baseline"] == faces["se"] != faces["resnet18"]  # resnet18's batches of 128 judge more faces
    (best,) = [name for name, gap in versus.items() if gap == "—"]
    for name in set(versus) - {best}:  # compared face by face only on the same faces
        paired = faces[name] == faces[best]
        assert (" ± " in versus[name]) == paired and (versus[name] == "–") == (not paired)
        if paired:  # bold: not told apart from the best
            gap, half_width = map(float, versus[name].split(" ± "))
            assert ("**" in next(line for line in table if line.startswith(f"| {name} |"))) == (abs(gap) <= half_width)
    assert "**" in next(line for line in table if line.startswith(f"| {best} |"))
    assert (results / "tiny.png").stat().st_size > 10_000 and (results / "tiny_recall.png").stat().st_size > 10_000
    for name in ("baseline", "se", "resnet18"):  # one TensorBoard folder, readable run names
        assert list((out / "tiny" / name / "seed4").glob("events.out.tfevents.*"))
        assert json.loads((out / "tiny" / name / "seed4" / "val_confusion_matrix.json").read_text())["counts"]
    saved = {name: yaml.safe_load((out / "tiny" / name / "seed3" / "config.yaml").read_text())
             for name in ("baseline", "se", "resnet18")}
    assert all(config["trainer"]["limit_train_batches"] == 3 for config in saved.values())  # the study's args
    assert saved["baseline"]["model"]["scheduler"] and saved["resnet18"]["model"]["scheduler"] is None  # own base
    assert saved["resnet18"]["model"]["tta_flip"] and "| 1 view |" in report
    own = json.loads((out / "tiny" / "resnet18" / "seed3" / "result.json").read_text())
    assert own["epochs"] == own["budget"]["epochs"] == 2 and own["budget"]["minutes"] == 5

    monkeypatch.setenv("FER_STUDY", str(results / "tiny.csv"))
    monkeypatch.setenv("FER_STUDY_RUNS", str(out / "tiny"))
    book = run_notebook(Path("notebooks/analyse_study.ipynb"))
    outputs = [o.get("text", "") for c in book.cells if c.cell_type == "code" for o in c.outputs]
    assert "hardest emotion" in "".join(outputs)

    # An interrupted run: drop its result so only last.ckpt (epoch 1) is left; a 2-epoch budget resumes it.
    (out / "tiny" / "baseline" / "seed4" / "result.json").unlink()
    last = out / "tiny" / "baseline" / "seed4" / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=False)
    clock = state["callbacks"]["FitClock"]
    assert 0 < clock["seconds"] < 600 and list(clock["by_machine"].values()) == [clock["seconds"]]
    other = "Other CPU (family 6 model 143), 2 cores, AVX2, no native bf16"
    state["callbacks"]["FitClock"] = {"seconds": 3600.0, "by_machine": {other: 3600.0}}  # an hour elsewhere first
    torch.save(state, last)
    finished = {p: p.stat().st_mtime_ns for p in out.rglob("result.json")}
    main(["ablate", str(write_study(tmp_path, epochs=2)), *common, "--report"])  # reports, trains nothing
    assert "Not finished yet (1): baseline seed 4" in (results / "tiny.md").read_text()
    main(["ablate", str(write_study(tmp_path, epochs=2)), *common])
    for path, mtime in finished.items():  # finished runs were skipped
        assert path.stat().st_mtime_ns == mtime
    resumed = json.loads((out / "tiny" / "baseline" / "seed4" / "result.json").read_text())
    assert resumed["epochs"] == 2 and resumed["budget"]["epochs"] == 2 and resumed["machine"]["cores"] >= 1
    assert 60 < resumed["wall_min"] < 70  # both sittings' time, each machine's apart
    assert resumed["wall_min_by_machine"][other] == 60 and len(resumed["wall_min_by_machine"]) == 2
    report = (results / "tiny.md").read_text()
    row = next(line for line in report.splitlines() if line.startswith("| baseline |"))
    assert f": {other}" in report and "+" in row.split("|")[-2]

    # Latencies timed where each run finished, then all again in turns on this machine; nothing retrains.
    assert "timed where each run finished" in (results / "tiny.md").read_text()
    finished = {p: p.stat().st_mtime_ns for p in out.rglob("last.ckpt")}
    main(["ablate", str(write_study(tmp_path, epochs=2)), *common, "--retime"])
    assert all(path.stat().st_mtime_ns == mtime for path, mtime in finished.items())
    here = json.loads((out / "tiny" / "baseline" / "seed3" / "result.json").read_text())["machine"]
    for path in out.rglob("result.json"):
        result = json.loads(path.read_text())
        assert result["latency_machine"] == here and result["latency_ms"] > 0
    assert json.loads(moved.read_text())["machine"]["cpu"] == "Other CPU"  # where it ran is kept
    assert "timed in turns on M1 (`--retime`)" in (results / "tiny.md").read_text()


def test_a_run_whose_checkpoint_is_gone_starts_again_and_tensorboard_shows_it_once(tmp_path, capsys):
    out, results = tmp_path / "runs", tmp_path / "results"
    study = ["ablate", str(write_study(tmp_path, epochs=1)), "--out", str(out), "--results", str(results),
             "--runs", "baseline", "--seeds", "3"]
    main(study)
    folder = out / "tiny" / "baseline" / "seed3"
    earlier = set(folder.glob("events.out.tfevents.*"))  # training's, then validation's
    # An interrupted sitting as a run folder travels: its logs, no checkpoint, no result.
    (folder / "result.json").unlink()
    for path in (folder / "checkpoints").iterdir():
        path.unlink()
    main(study)
    assert "starting again" in capsys.readouterr().out
    events = set(folder.glob("events.out.tfevents.*"))
    assert len(events) == len(earlier) and not events & earlier
    assert json.loads((folder / "result.json").read_text())["epochs"] == 1


def test_a_subset_naming_an_unknown_run_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["ablate", str(write_study(tmp_path, epochs=1)), "--runs", "resnet19", "--out", str(tmp_path)])
    assert "--runs resnet19: not in" in capsys.readouterr().err
    assert not list(tmp_path.rglob("result.json"))


@pytest.mark.parametrize("path", sorted(Path("experiments").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_committed_study_builds_each_of_its_runs(path, tmp_path):
    from fer.ablate import load_study, run_args
    from fer.training import EmotionClassifier
    from fer.training.lightning_cli import lightning_cli

    study = load_study(path)
    for run in study["runs"]:
        cli = lightning_cli(run_args(study, run, study["seeds"][0], tmp_path)[1:], run=False)
        assert isinstance(cli.model, EmotionClassifier), run["name"]
        args, epochs = [str(a) for a in run.get("args", [])], study["budget"]["epochs"]
        if "--trainer.max_epochs" in args:
            epochs = args[args.index("--trainer.max_epochs") + 1]
        assert cli.trainer.max_epochs == int(epochs), run["name"]  # the run's own budget, else the study's


def test_macs_count_the_self_attention_too():
    from fer.bench import forward_gmacs
    from fer.models import create_model

    baseline, mhsa = forward_gmacs(create_model("baseline"), 48), forward_gmacs(create_model("baseline_mhsa"), 48)
    assert abs(baseline - 0.4298) < 1e-3  # 2.65 M + 170 M + 170 M + 85 M conv MACs + 2.5 M dense
    assert mhsa > baseline + 0.03  # two encoder layers over 9 tokens of width 512


def result(run: str, seed: int, hits: str | None) -> dict:
    """A finished run's result.json as ``_run_one`` writes it, one network, judged on ``len(hits)`` faces."""
    r = {"run": run, "seed": seed, "val_acc": (hits or "1100").count("1") / len(hits or "1100"),
         "val_faces": len(hits or "1100"), "val_recall": {"happy": 1.0},
         "machine": {"cpu": "CPU", "cores": 2, "capability": "AVX2"},
         **dict.fromkeys(("val_f1", "params_m", "gmacs", "train_img_s", "latency_ms", "wall_min", "epochs"), 1.0)}
    return r if hits is None else {**r, "val_correct": hits}


def test_runs_are_compared_face_by_face_with_the_best():
    from fer.ablate import paired_gap, summarise

    rows = summarise([result("a", 1, "1110"), result("a", 2, "1101"),  # seeds averaged per face
                      result("b", 1, "1000"), result("b", 2, "1010"), result("c", 1, None)])
    best, other, older = (next(r for r in rows if r["run"] == name) for name in "abc")
    assert rows[0] is best
    gap, half = paired_gap(other, best)
    per_face = [1 - 1, 0 - 1, 0.5 - 0.5, 0 - 0.5]  # b's share of seeds right, less a's, face by face
    assert gap == pytest.approx(sum(per_face) / 4) == pytest.approx(other["val_acc"] - best["val_acc"])
    assert half == pytest.approx(1.96 * float(torch.tensor(per_face).std()) / 2)
    assert paired_gap(best, best) == (0.0, 0.0)
    assert paired_gap(older, best) is None  # a result from before faces were recorded


def test_runs_of_the_same_cost_keep_their_labels_apart(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from fer import ablate

    figures = []
    monkeypatch.setattr(ablate.plt, "close", figures.append)  # keep the figure to look at its labels
    crowd = [{**result(f"baseline_{i}", 1, None), "val_acc": 0.65 + 0.001 * i, "gmacs": 0.43, "latency_ms": 10.0}
             for i in range(5)]  # five variants of one network: the same MACs, within a point
    ablate._cost_plot({"name": "crowd"}, ablate.summarise(crowd), tmp_path / "crowd")
    monkeypatch.undo()
    (figure,) = figures
    renderer = figure.canvas.get_renderer()
    for ax in figure.axes:
        boxes = [t.get_window_extent(renderer) for t in ax.texts if t.get_text()]  # not the leader lines
        assert len(boxes) == 5
        assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    plt.close(figure)


def test_a_study_naming_a_reference_counts_every_gap_against_it(tmp_path):
    from fer.ablate import load_study, write_report

    study = {"name": "recipe", "base": ["configs/quickstart.yaml"], "seeds": [1], "reference": "full",
             "runs": [{"name": n} for n in ("full", "no_ema", "floor")]}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(study))
    results = [result("full", 1, "1" * 300 + "0" * 100),
               result("no_ema", 1, "0" * 15 + "1" * 305 + "0" * 80),  # 20 faces won, 15 lost: noise
               result("floor", 1, "1" * 200 + "0" * 200)]  # 100 faces lost: a real difference
    report = write_report(load_study(tmp_path / "recipe.yaml"), results, tmp_path, "cmd").read_text()
    lines = report.split("| run | val_acc |")[1].split("\n\n")[0].splitlines()[2:]
    table = {line.split("|")[1].strip(): [cell.strip() for cell in line.split("|")[2:5]] for line in lines}
    assert "| run | val_acc | ± | vs `full` |" in report and table["full"][2] == "—"
    assert table["no_ema"][2].startswith("+0.0125 ± ") and table["floor"][2].startswith("-0.2500 ± ")
    assert [table[n][0] for n in ("no_ema", "full", "floor")] == ["**0.7625**", "**0.7500**", "0.5000"]  # bold: tied
    assert list(table) == ["no_ema", "full", "floor"]  # by accuracy, whatever the reference
    assert (tmp_path / "recipe_gaps.png").stat().st_size > 10_000 and "(recipe_gaps.png)" in report
    assert not (tmp_path / "recipe.png").exists() and "(recipe.png)" not in report  # one network: one cost

    study["reference"] = "full_recipe"
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(study))
    with pytest.raises(SystemExit, match="reference 'full_recipe' is not one of its runs"):
        load_study(tmp_path / "recipe.yaml")
