"""The real CLI, in-process, on a tiny synthetic tree."""

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import cli_args

from fer.cli import main
from fer.emotions import EMOTIONS


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
    rows = list(csv.DictReader(open(Path(predicted.trainer.log_dir) / "predictions.csv")))
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


FULL_CONFIGS = sorted(Path("configs").glob("*.yaml"))
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


@pytest.mark.parametrize("stage", sorted(Path("configs/stages").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_later_stage_trains_on_from_an_earlier_stages_checkpoint(stage, tmp_path):
    """configs/stages/<recipe>_stageN.yaml layer over configs/<recipe>.yaml and start from its checkpoint."""
    base = Path("configs") / f"{stage.stem.rsplit('_stage', 1)[0]}.yaml"
    common = ["--data.data_dir", "synthetic", "--data.synthetic_samples_per_class", "20", "--data.batch_size", "8",
              "--data.num_workers", "0", "--trainer.default_root_dir", str(tmp_path),
              "--trainer.logger.init_args.save_dir", str(tmp_path)]
    first = main(["fit", "--config", str(base), *common, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
                  "--trainer.limit_val_batches", "2"])
    earlier = first.trainer.checkpoint_callback.best_model_path  # loaded by the second stage's setup: must fit
    # A stage starts from the earlier model's weights, or learns from its probabilities (data.teacher): a stage
    # with teachers of its own, or with another network, whose layers the earlier weights do not fit.
    layer = yaml.safe_load(stage.read_text())
    afresh = "teacher" in layer.get("data", {}) or {"backbone", "backbone_kwargs"} & layer.get("model", {}).keys()
    option = "data.teacher" if afresh else "model.init_from"
    second = main(["fit", "--config", str(base), "--config", str(stage), *common, "--trainer.fast_dev_run", "true",
                   f"--{option}", earlier])
    group, key = option.split(".")
    part = second.datamodule if group == "data" else second.model
    assert second.trainer.state.finished and part.hparams[key] == earlier
