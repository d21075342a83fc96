import csv
import json
from pathlib import Path

import yaml

from fer.cli import main
from notebooks import run_notebook

QUICK = ["--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "2", "--data.num_workers", "0",
         "--data.synthetic_samples_per_class", "30"]


def write_study(tmp_path: Path, epochs: int) -> Path:
    study = {
        "name": "tiny",
        "base": "configs/quickstart.yaml",
        "data_dir": "synthetic",
        "seed": 3,
        "budget": {"epochs": epochs, "minutes": 5},
        "runs": [
            {"name": "baseline", "args": QUICK},
            {"name": "se", "configs": ["configs/backbones/baseline_se.yaml"], "args": QUICK},
            {"name": "resnet18", "configs": ["configs/backbones/resnet18.yaml"], "args": QUICK},
        ],
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def test_ablation_runs_resumes_and_reports(tmp_path, monkeypatch):
    out, results = tmp_path / "runs", tmp_path / "results"
    common = ["--out", str(out), "--results", str(results)]
    main(["ablate", str(write_study(tmp_path, epochs=1)), *common])
    rows = list(csv.DictReader((results / "tiny.csv").read_text().splitlines()))
    assert {r["run"] for r in rows} == {"baseline", "se", "resnet18"}
    accs = [float(r["val_acc"]) for r in rows]
    assert accs == sorted(accs, reverse=True)
    for r in rows:
        assert 0 <= float(r["recall_disgust"]) <= 1
        assert float(r["params_m"]) > 0 and float(r["gmacs"]) > 0 and float(r["latency_ms"]) > 0
    assert "| run | val_acc" in (results / "tiny.md").read_text()
    assert (results / "tiny.png").stat().st_size > 10_000
    for name in ("baseline", "se", "resnet18"):  # one TensorBoard folder, readable run names
        assert list((out / "tiny" / name).glob("events.out.tfevents.*"))
        assert json.loads((out / "tiny" / name / "val_confusion_matrix.json").read_text())["counts"]

    monkeypatch.setenv("FER_STUDY", str(results / "tiny.csv"))
    monkeypatch.setenv("FER_STUDY_RUNS", str(out / "tiny"))
    book = run_notebook(Path("notebooks/analyse_study.ipynb"))
    outputs = [o.get("text", "") for c in book.cells if c.cell_type == "code" for o in c.outputs]
    assert "hardest emotion" in "".join(outputs)

    # An interrupted run: drop its result so only last.ckpt (epoch 1) is left; a 2-epoch budget resumes it.
    (out / "tiny" / "se" / "result.json").unlink()
    finished = {n: (out / "tiny" / n / "result.json").stat().st_mtime_ns for n in ("baseline", "resnet18")}
    main(["ablate", str(write_study(tmp_path, epochs=2)), *common])
    for name, mtime in finished.items():  # finished runs were skipped
        assert (out / "tiny" / name / "result.json").stat().st_mtime_ns == mtime
    resumed = json.loads((out / "tiny" / "se" / "result.json").read_text())
    assert resumed["epochs"] == 2


def test_macs_count_the_self_attention_too():
    from fer.bench import forward_gmacs
    from fer.models import create_model

    baseline, mhsa = forward_gmacs(create_model("baseline"), 48), forward_gmacs(create_model("baseline_mhsa"), 48)
    assert abs(baseline - 0.4298) < 1e-3  # 2.65 M + 170 M + 170 M + 85 M conv MACs + 2.5 M dense
    assert mhsa > baseline + 0.03  # two encoder layers over 9 tokens of width 512
