"""Interrupted runs, corrupt checkpoints, unwritable folders, bad configs, two processes: nothing lost, and
every failure explained in one paragraph."""

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fer.cli import main
from fer.runs import checkpoint_problem


def tiny_args(data: Path, out: Path, *extra: str) -> list[str]:
    """The quickstart config on the tiny tree with a BatchNorm VGG: a few seconds an epoch. Its schedule does
    not depend on the run's length, so a run stopped after 2 epochs and resumed to 4 can match one of 4."""
    return ["--config", "configs/quickstart.yaml", "--data.data_dir", str(data), "--data.num_workers", "0",
            "--data.batch_size", "32", "--model.backbone", "vgg_half", "--trainer.max_epochs", "4",
            "--model.scheduler", "torch.optim.lr_scheduler.CosineAnnealingLR", "--model.scheduler.init_args.T_max",
            "4", "--model.scheduler_interval", "epoch",
            "--trainer.default_root_dir", str(out), "--trainer.logger.init_args.save_dir", str(out),
            *extra]


def fails_with(args: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return str(exit_info.value.code) + capsys.readouterr().err


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--model.dropp", "0.1"], ["--model.dropp", "Did you mean model.drop_rate"]),
        (["--model.drop_rate", "abc"], ["model.drop_rate", "Expected a <class 'float'>"]),
        (["--data.xyz", "1"], ["data accepts: augment, batch_size"]),
        (["--model.backbone", "nope"], ["Unknown backbone 'nope' (model.backbone)", "registered backbones"]),
        (["--data.data_dir", "/nonexistent/fer"], ["data_dir /nonexistent/fer: not found", "Expected layout"]),
        (["--trainer.logger.init_args.save_dir", "/dev/null/runs"], ["cannot write to the log folder /dev/null/runs"]),
    ],
    ids=["typo", "wrong-type", "unknown-key", "unknown-backbone", "missing-data", "unwritable-logs"],
)
def test_config_mistakes_get_a_one_paragraph_error(extra, expected, tiny_tree, tmp_path, capsys):
    message = fails_with(["fit", *tiny_args(tiny_tree, tmp_path), "--trainer.fast_dev_run", "true", *extra], capsys)
    assert "Traceback" not in message
    for text in expected:
        assert text in message


@pytest.fixture(scope="module")
def uninterrupted(tiny_tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    cli = main(["fit", *tiny_args(tiny_tree, out)])
    return cli.trainer


def _val_acc_by_step(run: Path) -> dict[int, float]:
    events = EventAccumulator(str(run), size_guidance={"scalars": 0})
    events.Reload()
    return {e.step: e.value for e in events.Scalars("val/acc")}


def _saved_epoch(path: Path) -> int:
    """The epoch a checkpoint was saved in, or -1 while there is none."""
    import torch

    return torch.load(path, map_location="cpu", weights_only=False)["epoch"] if path.exists() else -1


@pytest.mark.slow
def test_a_run_killed_mid_epoch_resumes_from_last_and_matches_an_uninterrupted_one(uninterrupted, tiny_tree, tmp_path):
    command = [sys.executable, "-m", "fer", "fit", *tiny_args(tiny_tree, tmp_path)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = tmp_path / "quickstart" / "version_0" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while _saved_epoch(last) < 1:  # kill once epoch 1 is saved: during epoch 2
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert checkpoint_problem(last) is None  # written atomically: whole even when killed at any moment
    assert _saved_epoch(last) in (1, 2)  # epochs 2 and 3 (or at least 3) are left to train

    resumed = main(["fit", *tiny_args(tiny_tree, tmp_path), "--ckpt_path", "last"]).trainer
    assert resumed.current_epoch == uninterrupted.current_epoch == 4
    assert resumed.global_step == uninterrupted.global_step
    assert not (tmp_path / "quickstart" / "version_1").exists()  # logged on in the same run folder
    curve = _val_acc_by_step(tmp_path / "quickstart" / "version_0")
    assert len(curve) == 4 and max(curve) == resumed.global_step - 1  # one curve, every epoch, to the end
    final = resumed.callback_metrics["val/acc"].item()
    assert abs(final - uninterrupted.callback_metrics["val/acc"].item()) <= 0.1  # same seed: within noise


@pytest.mark.slow
def test_a_resumed_run_continues_the_random_stream_and_ends_where_the_uninterrupted_one_does(uninterrupted, tiny_tree,
                                                                                           tmp_path):
    import torch

    main(["fit", *tiny_args(tiny_tree, tmp_path, "--trainer.max_epochs", "2")])
    resumed = main(["fit", *tiny_args(tiny_tree, tmp_path), "--ckpt_path", "last"]).trainer
    # Same augmentations, dropout masks and batch order as the run that never stopped (not the seed's stream
    # replayed from epoch 0), so the same weights.
    theirs = uninterrupted.lightning_module.net.state_dict()
    for name, weights in resumed.lightning_module.net.state_dict().items():
        assert torch.equal(weights, theirs[name]), name


def test_a_truncated_last_checkpoint_is_detected_and_the_newest_good_one_offered(tiny_tree, tmp_path, capsys):
    main(["fit", *tiny_args(tiny_tree, tmp_path, "--trainer.max_epochs", "1")])
    folder = tmp_path / "quickstart" / "version_0" / "checkpoints"
    last = folder / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    (good,) = folder.glob("epoch*.ckpt")
    message = fails_with(["fit", *tiny_args(tiny_tree, tmp_path), "--ckpt_path", "last"], capsys)
    assert f"checkpoint {last} is truncated or corrupt" in message
    assert f"resume with --ckpt_path {good}" in message


def test_a_full_disk_stops_the_run_with_a_clear_message_and_keeps_the_last_checkpoint(tiny_tree, tmp_path, capsys,
                                                                                   monkeypatch):
    from fsspec.implementations.local import LocalFileOpener

    writes = []
    original = LocalFileOpener.write

    def write(self, data):
        if ".ckpt" in self.path:
            writes.append(self.path)
        if len(writes) > 2:  # the first epoch's best and last checkpoints fit; then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device", self.path)
        return original(self, data)

    monkeypatch.setattr(LocalFileOpener, "write", write)
    message = fails_with(["fit", *tiny_args(tiny_tree, tmp_path)], capsys)
    assert "cannot write" in message and "No space left on device" in message
    assert checkpoint_problem(tmp_path / "quickstart" / "version_0" / "checkpoints" / "last.ckpt") is None


@pytest.mark.slow
def test_two_processes_train_with_ddp_and_agree(tiny_tree, tmp_path):
    args = tiny_args(tiny_tree, tmp_path, "--trainer.max_epochs", "2")
    ddp = ["--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu"]
    subprocess.run([sys.executable, "-m", "fer", "fit", *args, *ddp], check=True, timeout=600,
                   stdout=subprocess.DEVNULL)
    runs = list((tmp_path / "quickstart").iterdir())
    assert [r.name for r in runs] == ["version_0"]  # only rank 0 writes logs
    checkpoints = sorted(p.name for p in (runs[0] / "checkpoints").iterdir())
    assert len(checkpoints) == 2 and "last.ckpt" in checkpoints
    assert len(_val_acc_by_step(runs[0])) == 2
    last = runs[0] / "checkpoints" / "last.ckpt"
    subprocess.run([sys.executable, "-m", "fer", "test", *args, *ddp, "--ckpt_path", str(last)], check=True,
                   timeout=600, stdout=subprocess.DEVNULL)
    import json

    (metrics,) = [json.loads(p.read_text()) for p in (tmp_path / "quickstart").glob("*/test_metrics.json")]
    # Each process sees half the test faces; the synchronised confusion matrix counts them all
    # (DistributedSampler pads the split to a multiple of 2 with a repeated face).
    assert metrics["samples"] in (105, 106)
