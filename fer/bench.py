"""``python -m fer bench train --config …``: training throughput of a config, printed as JSON.

For each precision × memory format it times ``--batches`` training steps of the full Lightning stack
(after ``--warmup`` steps) and the same model, data loader and precision in a minimal PyTorch loop,
and reports images/s, their ratio and the share of step time spent waiting for data.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch

from fer.data import FERDataModule


class StepTimer(L.Callback):
    """Images/s and data-wait share over the training steps after the first ``warmup``."""

    def __init__(self, warmup: int = 5) -> None:
        self.warmup, self.step, self.images = warmup, 0, 0
        self.start = self.last_end = 0.0
        self.wait = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        now = time.perf_counter()
        if self.step == self.warmup:
            self.start = now
        elif self.step > self.warmup:
            self.wait += now - self.last_end

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.last_end = time.perf_counter()
        if self.step >= self.warmup:
            self.images += len(batch[1])
        self.step += 1

    def result(self) -> dict[str, float]:
        elapsed = self.last_end - self.start
        if self.images == 0 or elapsed <= 0:
            return {"images_per_s": float("nan"), "data_wait_share": float("nan")}
        return {"images_per_s": round(self.images / elapsed, 1), "data_wait_share": round(self.wait / elapsed, 4)}


def inference_latency_ms(model: torch.nn.Module, image_size: int, in_chans: int = 1, runs: int = 50) -> float:
    """Median single-image (batch 1) fp32 forward time on one CPU thread, in milliseconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = model.eval()
        x = torch.rand(1, in_chans, image_size, image_size)
        times = []
        with torch.inference_mode():
            for i in range(runs + 5):
                start = time.perf_counter()
                model(x)
                if i >= 5:
                    times.append(time.perf_counter() - start)
        return round(sorted(times)[len(times) // 2] * 1000, 3)
    finally:
        torch.set_num_threads(threads)


def _lightning(model_factory, dm: FERDataModule, precision: str, batches: int, warmup: int) -> dict[str, float]:
    timer = StepTimer(warmup)
    trainer = L.Trainer(
        max_epochs=1, limit_train_batches=warmup + batches, limit_val_batches=0, precision=precision,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[timer], accelerator="cpu", devices=1,
    )
    trainer.fit(model_factory(), dm)
    return timer.result()


def _plain(model_factory, dm: FERDataModule, precision: str, batches: int, warmup: int) -> dict[str, float]:
    model = model_factory()
    model.train()
    optimizer = model.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    use_bf16 = precision.startswith("bf16")
    images, start, wait = 0, 0.0, 0.0
    loader = iter(dm.train_dataloader())
    end = time.perf_counter()
    for step in range(warmup + batches):
        x, y = next(loader)
        fetched = time.perf_counter()
        if step == warmup:
            start = fetched
        elif step > warmup:
            wait += fetched - end
        with torch.autocast("cpu", torch.bfloat16, enabled=use_bf16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        end = time.perf_counter()
        if step >= warmup:
            images += len(y)
    return {"images_per_s": round(images / (end - start), 1), "data_wait_share": round(wait / (end - start), 4)}


def bench_train(argv: Sequence[str]) -> dict:
    parser = argparse.ArgumentParser(prog="fer bench train", description=__doc__)
    parser.add_argument("--config", required=True, help="an experiment YAML from configs/")
    parser.add_argument("--data_dir", default="synthetic", help="data to read batches from (default: synthetic)")
    parser.add_argument("--precision", nargs="+", default=["32-true", "bf16-mixed"])
    parser.add_argument("--channels_last", nargs="+", default=["true", "false"], choices=["true", "false"])
    parser.add_argument("--batches", type=int, default=20, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args(argv)

    from fer.cli import FERCLI  # the CLI builds model and data exactly as `fit` would
    from fer.training import EmotionClassifier

    cli = FERCLI(EmotionClassifier, FERDataModule, run=False, args=["--config", args.config,
                                                                    "--data.data_dir", args.data_dir])
    dm = cli.datamodule
    dm.prepare_data()
    dm.setup("fit")
    init = cli.model
    results = {"config": args.config, "batch_size": dm.hparams.batch_size, "threads": torch.get_num_threads(),
               "runs": []}
    for channels_last in args.channels_last:
        for precision in args.precision:
            def model_factory() -> EmotionClassifier:
                torch.manual_seed(0)
                kwargs = {k: v for k, v in init.hparams.items() if not k.startswith("_")}
                return type(init)(**{**kwargs, "channels_last": channels_last == "true",
                                     "optimizer": init.optimizer_factory, "scheduler": None})
            row = {"precision": precision, "channels_last": channels_last == "true"}
            row["lightning"] = _lightning(model_factory, dm, precision, args.batches, args.warmup)
            row["plain_pytorch"] = _plain(model_factory, dm, precision, args.batches, args.warmup)
            row["lightning_vs_plain"] = round(row["lightning"]["images_per_s"] / row["plain_pytorch"]["images_per_s"], 3)
            results["runs"].append(row)
            print(json.dumps(row), flush=True)
    return results


def bench_detect(argv: Sequence[str]) -> dict:
    """Face-detector recall on FER-style faces: each face upscaled and pasted into a 640×480 photo."""
    import numpy as np
    from PIL import Image

    from fer.data.reading import list_split
    from fer.emotions import EMOTIONS
    from fer.faces import Box, HaarFaceDetector

    parser = argparse.ArgumentParser(prog="fer bench detect", description=bench_detect.__doc__)
    parser.add_argument("--split_dir", required=True, help="a <split>/<emotion>/* folder, e.g. …/fer2013/validation")
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    files = list_split(Path(args.split_dir), EMOTIONS)
    picks = rng.choice(len(files), size=min(args.samples, len(files)), replace=False)
    detector, found, seconds = HaarFaceDetector(), 0, 0.0
    for i in picks:
        side = int(rng.integers(96, 241))
        face = Image.open(files[i][0]).convert("L").resize((side, side), Image.Resampling.BICUBIC)
        photo = Image.fromarray(rng.integers(60, 200, (480, 640), dtype=np.uint8)).resize((640, 480))
        x, y = int(rng.integers(0, 640 - side)), int(rng.integers(0, 480 - side))
        photo.paste(face, (x, y))
        start = time.perf_counter()
        boxes = detector(np.asarray(photo))
        seconds += time.perf_counter() - start
        found += any(b.iou(Box(x, y, side, side)) >= 0.3 for b in boxes)
    return {"detector": "opencv haar frontalface_default", "samples": len(picks), "recall": round(found / len(picks), 4),
            "ms_per_640x480_image": round(seconds / len(picks) * 1000, 2)}


BENCHES = {"train": bench_train, "detect": bench_detect}


def bench_command(argv: Sequence[str]) -> None:
    if not argv or argv[0] not in BENCHES:
        raise SystemExit(f"usage: python -m fer bench {{{','.join(BENCHES)}}} [options]  (see --help)")
    print(json.dumps(BENCHES[argv[0]](argv[1:]), indent=2))
