from fer.cli import main


def _metrics(tmp_path) -> dict[str, float]:
    cli = main([
        "fit", "--config", "configs/quickstart.yaml", "--data.synthetic_samples_per_class", "20",
        "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "3", "--trainer.deterministic", "true",
        "--trainer.logger", "false", "--trainer.enable_checkpointing", "false", "--trainer.callbacks", "[]",
        "--trainer.default_root_dir", str(tmp_path),
    ])
    return {k: v.item() for k, v in cli.trainer.callback_metrics.items()}


def test_same_config_and_seed_give_bit_identical_metrics(tmp_path):
    first, second = _metrics(tmp_path / "a"), _metrics(tmp_path / "b")
    assert "val/loss" in first and "train/loss_epoch" in first
    assert first == second
