"""The real CLI, in-process, on a tiny synthetic tree."""

import csv
import json
import re
from pathlib import Path

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import cli_args
from fer.cli import main
from fer.data import FERDataModule
from fer.emotions import EMOTIONS
from fer.training import EmotionClassifier
from fer.training.lightning_cli import lightning_cli


def test_fit_writes_checkpoints_config_and_tensorboard(fitted):
    cli, _ = fitted
    run = Path(cli.trainer.log_dir)
    ckpts = sorted(p.name for p in (run / "checkpoints").glob("*.ckpt"))
    assert "last.ckpt" in ckpts and any(name.startswith("epoch") for name in ckpts)
    config = yaml.safe_load((run / "config.yaml").read_text())
    epochs = yaml.safe_load(Path("configs/quickstart.yaml").read_text())["trainer"]["max_epochs"]
    assert config["model"]["backbone"] == "baseline" and config["trainer"]["max_epochs"] == epochs
    assert config["trainer"]["precision"] == "auto"  # the run's record says what was asked for

    events = EventAccumulator(str(run), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    expected = {"train/loss_step", "train/acc", "val/loss", "val/acc", "val/f1", "hp/val_acc_best", "lr-Adam"}
    assert expected <= scalars
    assert {f"val/recall/{e}" for e in EMOTIONS} <= scalars
    assert "val/confusion_matrix" in events.Tags()["images"]
    assert len(events.Images("val/confusion_matrix")) == epochs  # one per validation epoch, none for the sanity check
    assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")


def test_checkpoint_stores_the_emotion_order(fitted):
    cli, _ = fitted
    ckpt = torch.load(Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt", weights_only=False)
    assert list(ckpt["hyper_parameters"]["emotions"]) == list(EMOTIONS)


def test_test_beats_chance_and_writes_confusion_matrix(fitted):
    cli, out = fitted
    best = cli.trainer.checkpoint_callback.best_model_path
    tested = main(["test", *cli_args(out), "--ckpt_path", best])
    run = Path(tested.trainer.log_dir)
    confusion = json.loads((run / "test_confusion_matrix.json").read_text())
    assert confusion["labels"] == list(EMOTIONS)
    assert sum(map(sum, confusion["counts"])) == 7 * 62  # a quarter of 250 per emotion
    assert (run / "test_confusion_matrix.png").stat().st_size > 5000
    metrics = json.loads((run / "test_metrics.json").read_text())
    assert metrics["accuracy"] > 0.3, metrics  # chance is 1/7
    assert set(metrics["per_class_recall"]) == set(EMOTIONS)


def test_predict_writes_one_row_per_image(fitted, tiny_tree):
    cli, out = fitted
    folder = tiny_tree / "test" / "happy"
    predicted = main(["predict", *cli_args(out), "--ckpt_path", cli.trainer.checkpoint_callback.best_model_path,
                      "--data.predict_path", str(folder)])
    rows = list(csv.DictReader((Path(predicted.trainer.log_dir) / "predictions.csv").read_text().splitlines()))
    assert len(rows) == len(list(folder.glob("*.png")))
    assert all(row["emotion"] in EMOTIONS for row in rows)
    assert all(abs(sum(float(row[e]) for e in EMOTIONS) - 1) < 1e-3 for row in rows)


@pytest.mark.parametrize("config", sorted(Path("configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_config_prints(config, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["data"]["emotions"] == list(EMOTIONS)
    assert "emotions" not in printed["model"]  # linked from the data, never set twice
    assert printed["model"]["backbone"]


FULL_CONFIGS = sorted(Path("configs").glob("*.yaml"))  # each complete alone
BACKBONE_CONFIGS = sorted(Path("configs/backbones").glob("*.yaml"))


@pytest.mark.parametrize(
    "configs",
    [[c] for c in FULL_CONFIGS] + [[Path("configs/quickstart.yaml"), c] for c in BACKBONE_CONFIGS],
    ids=lambda cs: "+".join(c.stem for c in cs),
)
def test_every_config_trains_a_fast_dev_run(configs, tmp_path):
    args = ["fit"]
    for config in configs:
        args += ["--config", str(config)]
    cli = main([*args, "--data.data_dir", "synthetic", "--data.synthetic_samples_per_class", "20",
                "--data.batch_size", "8", "--data.num_workers", "0", "--trainer.fast_dev_run", "true",
                "--trainer.default_root_dir", str(tmp_path)])
    assert cli.trainer.state.finished
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss_step"])


DOCUMENTS = [Path("README.md"), Path("MODEL_CARD.md"), *Path("docs").glob("*.md"), *Path("configs").rglob("*.yaml")]


def documented_commands(documents: list[Path] = DOCUMENTS) -> list[str]:
    """Every ``python -m fer …`` command in the README, the docs and the configs' comments, one line each."""
    commands = []
    for path in documents:
        text = re.sub(r"\\\n[#\s]*", " ", path.read_text())  # lines continued with a backslash
        commands += re.findall(r"python -m fer [^\n`|]*", text)
    return commands


def documented_stacks() -> list[tuple[str, ...]]:
    """The config stacks the documented commands use, each once."""
    stacks = {tuple(re.findall(r"--config (configs/\S+\.yaml)", c)) for c in documented_commands()}
    return sorted(s for s in stacks if s)


def test_every_config_is_in_a_documented_command():
    documented = {c for stack in documented_stacks() for c in stack}
    assert {str(p) for p in Path("configs").rglob("*.yaml")} <= documented


@pytest.mark.parametrize("stack", documented_stacks(), ids="+".join)
def test_every_documented_stack_builds_and_names_its_run_after_its_last_config(stack):
    cli = lightning_cli([arg for config in stack for arg in ("--config", config)], run=False)
    assert isinstance(cli.model, EmotionClassifier) and isinstance(cli.datamodule, FERDataModule)
    assert cli.trainer.logger.name == str(Path(stack[-1]).relative_to("configs").with_suffix(""))


def test_the_shipped_models_recipe_runs_as_documented(tmp_path, monkeypatch):
    """The command sequence of docs/training.md, as written, on synthetic faces: one short epoch a step (the five
    steps of the shipped model, then its FER+ counterpart and the fast model)."""
    recipe = [c.split()[3:] for c in documented_commands([Path("docs/training.md")])
              if ("fer2013_vgg/" in c or "fer2013_fast/" in c) and c.split()[3] in ("fit", "export")]
    assert [c[0] for c in recipe] == ["fit", "export"] * 7
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").symlink_to(Path(__file__).parents[1] / "configs")
    tiny = ["--data.data_dir", "synthetic", "--data.synthetic_samples_per_class", "10", "--data.batch_size", "8",
            "--data.num_workers", "0", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
            "--trainer.limit_val_batches", "1"]
    for command, *args in recipe:
        args = [str(next(Path().glob(a))) if "*" in a else a for a in args]  # what the shell would expand
        main([command, *args, *(tiny if command == "fit" else [])])
    shipped = torch.load("fer/weights/fer2013_vgg.ckpt", weights_only=False)
    assert shipped["hyper_parameters"]["backbone_kwargs"] == {"depth": 3}
    assert {v.dtype for v in shipped["state_dict"].values() if v.is_floating_point()} == {torch.float16}
    ferplus = torch.load("fer/weights/ferplus_vgg.ckpt", weights_only=False)
    assert ferplus["hyper_parameters"]["emotions"][-1] == "contempt"
    fast = torch.load("fer/weights/fast_vgg.ckpt", weights_only=False)
    assert fast["hyper_parameters"]["backbone_kwargs"] == {"widths": [28, 56, 112, 224]}
    config = yaml.safe_load(Path("runs/fer2013_vgg/student/version_0/config.yaml").read_text())
    assert config["data"]["teacher"] == ["experiments/weights/vgg_ensemble_distill.ckpt",
                                         "experiments/weights/vgg_long.ckpt"]
