"""``python -m fer bench train|infer|models|detect|serve``: measurements printed as JSON.

- ``train --config …``: for each precision × memory format, ``--batches`` training steps of the full Lightning
  stack (after ``--warmup`` steps) and of the same model, data loader and precision in a minimal PyTorch loop:
  images/s, their ratio and the share of step time spent waiting for data; and the ceiling this CPU sets:
  large-matrix-multiply GFLOP/s per precision divided by the model's training FLOPs per image.
- ``infer [--ckpt …]``: single-face latency (batch 1, one thread; p50/p99, the runtimes timed in turns) and
  batch throughput of eager PyTorch, TorchScript and ONNX Runtime, and the detection + classification
  pipeline's frames/s on a 640×480 video with one face; and what the model's FLOPs cost at a one-thread fp32
  matrix-multiply rate.
- ``models --calibration_data …``: the shipped models (or ``--ckpt`` ones) side by side as a deployment runs them:
  each one's int8 ONNX export, its test-time views inside, timed in turns at batch 1 on one thread, and its
  faces/s at a larger batch; with the MACs a face and the file size beside, and the machine's facts.
- ``detect --photos …|--split_dir …``: face detectors on annotated photographs, or on FER-style faces pasted into
  640×480 noise.
- ``serve [--clients 8 --seconds 20]``: a bounded load test of the web API on loopback.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import lightning as L
import numpy as np
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from fer.data import FERDataModule
from fer.data.synthetic import render_face
from fer.hardware import cpu_has_native_bf16, machine_facts, machine_label, resolve_precision
from fer.malloc import keep_freed_memory
from fer.models.views import tta_views


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


class FitClock(L.Callback):
    """A run's wall time, from this callback's creation (so data loading and a teacher's pass count) to the end of
    ``fit``, summed over sittings and kept per machine (``machine_label``): carried in the checkpoints, so a run
    resumed from ``last.ckpt`` (on this machine or another) counts what its earlier sittings spent, and where."""

    def __init__(self) -> None:
        self.machine, self.earlier, self.start = machine_label(machine_facts()), {}, time.perf_counter()

    def by_machine(self) -> dict[str, float]:
        """Seconds spent on each machine, this sitting's included."""
        spent = dict(self.earlier)
        if self.start is not None:
            spent[self.machine] = spent.get(self.machine, 0.0) + time.perf_counter() - self.start
        return spent

    def on_fit_end(self, trainer, pl_module) -> None:
        self.earlier, self.start = self.by_machine(), None

    def state_dict(self) -> dict:
        spent = self.by_machine()
        return {"seconds": sum(spent.values()), "by_machine": spent}

    def load_state_dict(self, state_dict: dict) -> None:
        # A checkpoint from before machines were kept has the total alone.
        self.earlier = dict(state_dict.get("by_machine") or {"machine not recorded": state_dict["seconds"]})


def _wall_times(run: Callable[[], object], runs: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return times


def _percentiles_ms(times: list[float]) -> dict[str, float]:
    times = sorted(times)
    return {"p50_ms": round(times[len(times) // 2] * 1000, 3), "p99_ms": round(times[int(len(times) * 0.99)] * 1000, 3)}


def latency_ms(run: Callable[[], object], runs: int = 50, warmup: int = 5) -> dict[str, float]:
    """p50 and p99 of ``run()``'s wall time, in milliseconds, after ``warmup`` calls."""
    return _percentiles_ms(_wall_times(run, runs, warmup))


def interleaved_latency_ms(runs: dict[str, Callable[[], object]], calls: int, rounds: int = 5,
                           warmup: int = 5) -> dict[str, dict]:
    """``latency_ms`` of each callable over ``calls`` calls, timed in ``rounds`` rounds that take turns (each
    round after ``warmup`` untimed calls).

    On a shared host a neighbour's burst of load then slows every callable alike instead of whichever was
    being timed. Each row also lists its rounds' p50s: their spread shows how noisy the host was."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    round_p50s: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            round_times = _wall_times(run, max(1, calls // rounds), warmup)
            times[name] += round_times
            round_p50s[name].append(_percentiles_ms(round_times)["p50_ms"])
    return {name: {**_percentiles_ms(times[name]), "round_p50_ms": round_p50s[name]} for name in runs}


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def forward_gmacs(model: torch.nn.Module, image_size: int, in_chans: int = 1) -> float:
    """Multiply-accumulates of one forward pass at the input size, in billions.

    Counted on a copy in training mode: in eval mode PyTorch's fused transformer kernel hides its matmuls
    from the counter."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        copy.deepcopy(model).train()(torch.rand(2, in_chans, image_size, image_size))  # 2: BatchNorm needs it
    return round(counter.get_total_flops() / 4e9, 4)


def face_gmacs(module: L.LightningModule) -> float:
    """Multiply-accumulates a face costs a trained ``EmotionClassifier``, its test-time views included, in billions."""
    hp = module.hparams
    views = tta_views(torch.zeros(1, hp.in_chans, hp.image_size, hp.image_size), hp.tta_flip, hp.tta_shift,
                      hp.tta_crop)
    return forward_gmacs(module.net, hp.image_size, hp.in_chans) * len(views)


def matmul_gflops(dtype: torch.dtype, n: int = 2048) -> float:
    """GFLOP/s of an n×n×n matrix multiply at the current thread count: about the most a conv net's
    convolutions (oneDNN GEMM-like kernels) can get out of this CPU in that precision."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    seconds = latency_ms(lambda: a @ b, runs=5, warmup=2)["p50_ms"] / 1000
    return round(2 * n**3 / seconds / 1e9, 1)


def inference_latency_ms(model: torch.nn.Module, image_size: int, in_chans: int = 1, runs: int = 50) -> float:
    """Median single-image (batch 1) fp32 forward time on one CPU thread, in milliseconds."""
    x = torch.rand(1, in_chans, image_size, image_size)
    with torch_threads(1), torch.inference_mode():
        return latency_ms(lambda: model.eval()(x), runs)["p50_ms"]


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
    parser.add_argument("--config", required=True, nargs="+", help="an experiment YAML from configs/ (or a stack)")
    parser.add_argument("--data_dir", default="synthetic", help="data to read batches from (default: synthetic)")
    parser.add_argument("--precision", nargs="+", default=None,
                        help="precisions to time (default: 32-true, and bf16-mixed where the CPU has native bf16)")
    parser.add_argument("--channels_last", nargs="+", default=["true", "false"], choices=["true", "false"])
    parser.add_argument("--batches", type=int, default=20, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args(argv)

    from fer.training import EmotionClassifier
    from fer.training.lightning_cli import lightning_cli  # model and data built exactly as `fit` builds them

    configs = [arg for config in args.config for arg in ("--config", config)]
    cli = lightning_cli([*configs, "--data.data_dir", args.data_dir], run=False)
    keep_freed_memory()  # as `fit` does
    dm = cli.datamodule
    dm.hparams.teacher = None  # a distillation config's one-off teacher pass is not a training step: not timed
    dm.prepare_data()
    dm.setup("fit")
    init = cli.model
    gmacs = forward_gmacs(init.net, init.hparams.image_size, init.hparams.in_chans)
    native_bf16 = cpu_has_native_bf16()
    precisions = [str(resolve_precision(p)) for p in args.precision or ["32-true"] + ["bf16-mixed"] * native_bf16]
    # Only the precisions asked for, and no emulated bf16 (its matrix multiply takes minutes): no ceiling there.
    rates = {p: matmul_gflops(torch.bfloat16 if p.startswith("bf16") else torch.float32) for p in precisions
             if native_bf16 or not p.startswith("bf16")}
    results = {"config": args.config, "batch_size": dm.hparams.batch_size, "threads": torch.get_num_threads(),
               "forward_gmacs_per_image": gmacs, "matmul_gflops": rates,
               # a training step ≈ 3 forward passes (forward, input gradients, weight gradients); 2 FLOPs per MAC
               "ceiling_images_per_s": {p: round(r / (6 * gmacs), 1) for p, r in rates.items()},
               "runs": []}
    print(json.dumps({k: v for k, v in results.items() if k != "runs"}), flush=True)
    for channels_last in args.channels_last:
        for precision in precisions:
            def model_factory(channels_last: bool = channels_last == "true") -> EmotionClassifier:
                torch.manual_seed(0)
                kwargs = {k: v for k, v in init.hparams.items() if not k.startswith("_")}
                return type(init)(**{**kwargs, "channels_last": channels_last,
                                     "optimizer": init.optimizer_factory, "scheduler": None})
            row = {"precision": precision, "channels_last": channels_last == "true"}
            row["lightning"] = _lightning(model_factory, dm, precision, args.batches, args.warmup)
            row["plain_pytorch"] = _plain(model_factory, dm, precision, args.batches, args.warmup)
            lightning, plain = row["lightning"]["images_per_s"], row["plain_pytorch"]["images_per_s"]
            row["lightning_vs_plain"] = round(lightning / plain, 3)
            results["runs"].append(row)
            print(json.dumps(row), flush=True)
    return results


def bench_detect(argv: Sequence[str]) -> dict:
    """Face detectors compared: on photographs with hand-made boxes (``--photos``: precision, recall, false
    positives) or on FER-style faces upscaled and pasted into 640×480 noise (``--split_dir``: recall)."""
    from fer.faces import DETECTORS, create_detector

    parser = argparse.ArgumentParser(prog="fer bench detect", description=bench_detect.__doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--photos", type=Path, help="a folder of photos and their annotations.json: {images: [{file, "
                        "faces: [{box: [x, y, w, h], difficult}]}]}")
    source.add_argument("--split_dir", type=Path, help="a <split>/<emotion>/* folder, e.g. …/fer2013/validation")
    parser.add_argument("--detector", nargs="+", choices=list(DETECTORS), default=list(DETECTORS))
    parser.add_argument("--iou", type=float, default=0.5, help="overlap that makes a box a hit (--photos)")
    parser.add_argument("--annotate", type=Path, help="--photos: write each photo with the hand-made boxes (blue), "
                        "hits (green) and false positives (red) into this folder")
    parser.add_argument("--samples", type=int, default=500, help="--split_dir: faces to paste")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    results = {}
    for name in args.detector:
        detector = create_detector(name)
        measure = _detector_on_photos if args.photos else _detector_on_pasted_faces
        results[name] = measure(detector, args)
        print(json.dumps({name: results[name]}), flush=True)
    return results


def _detector_on_photos(detector: Callable, args: argparse.Namespace) -> dict:
    from PIL import ImageDraw

    from fer.faces import Box, load_image

    images = json.loads((args.photos / "annotations.json").read_text())["images"]
    hits = misses = false = false_on_empty = 0
    seconds = 0.0
    for entry in images:
        pixels = load_image(args.photos / entry["file"])
        start = time.perf_counter()
        boxes = sorted(detector(pixels), key=lambda b: -(b.score if b.score is not None else b.area))
        seconds += time.perf_counter() - start
        truth = [(Box(*f["box"]), f.get("difficult", False)) for f in entry["faces"]]
        taken, outcome = set(), []
        for box in boxes:  # the most confident first, each to the free hand-made box it overlaps most
            overlaps = [(box.iou(t), i) for i, (t, _) in enumerate(truth) if i not in taken]
            iou, i = max(overlaps, default=(0.0, -1))
            if iou >= args.iou:
                taken.add(i)
                outcome.append("ignored" if truth[i][1] else "hit")
            else:
                outcome.append("false")
        hits += outcome.count("hit")
        false += outcome.count("false")
        false_on_empty += outcome.count("false") if not truth else 0
        misses += sum(1 for i, (_, difficult) in enumerate(truth) if i not in taken and not difficult)
        if args.annotate:
            args.annotate.mkdir(parents=True, exist_ok=True)
            picture = Image.fromarray(pixels).convert("RGB")
            draw = ImageDraw.Draw(picture)
            colours = {"hit": (0, 200, 0), "false": (230, 0, 0), "ignored": (160, 160, 160)}
            for t, _ in truth:
                draw.rectangle([t.x, t.y, t.x + t.w, t.y + t.h], outline=(0, 90, 255), width=2)
            for box, kind in zip(boxes, outcome):
                draw.rectangle([box.x, box.y, box.x + box.w, box.y + box.h], outline=colours[kind], width=2)
            picture.save(args.annotate / f"{Path(entry['file']).stem}.{detector.__class__.__name__}.jpg")
    precision = hits / max(1, hits + false)
    recall = hits / max(1, hits + misses)
    return {"photos": len(images), "faces": hits + misses, "hits": hits, "misses": misses,
            "false_positives": false, "false_positives_on_photos_without_faces": false_on_empty,
            "precision": round(precision, 4), "recall": round(recall, 4),
            "f1": round(2 * precision * recall / max(1e-9, precision + recall), 4), "iou": args.iou,
            "ms_per_photo": round(seconds / len(images) * 1000, 1)}


def _detector_on_pasted_faces(detector: Callable, args: argparse.Namespace) -> dict:
    from fer.data.reading import list_split
    from fer.emotions import EMOTIONS
    from fer.faces import Box

    rng = np.random.default_rng(args.seed)
    files = list_split(args.split_dir, EMOTIONS)
    picks = rng.choice(len(files), size=min(args.samples, len(files)), replace=False)
    found, seconds = 0, 0.0
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
    return {"samples": len(picks), "recall": round(found / len(picks), 4),
            "ms_per_640x480_image": round(seconds / len(picks) * 1000, 2)}


def _face_video(path: Path, face: np.ndarray, frames: int) -> None:
    """A 640×480 video of ``face`` (grayscale, any size) scaled to 160 px, drifting over a textured background."""
    import cv2

    rng = np.random.default_rng(0)
    background = cv2.resize(rng.integers(60, 200, (60, 80), dtype=np.uint8), (640, 480))
    face = cv2.resize(face, (160, 160), interpolation=cv2.INTER_CUBIC)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, (640, 480))
    for i in range(frames):
        frame = background.copy()
        x = 200 + int(40 * np.sin(i / 15))
        frame[160:320, x:x + 160] = face
        writer.write(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
    writer.release()


def bench_infer(argv: Sequence[str]) -> dict:
    """Inference latency and throughput of a model in eager PyTorch, TorchScript and ONNX Runtime, and the
    frames/s of the whole detection + classification pipeline."""
    import cv2

    from fer.api import OnnxClassifier, add_model_options, load_recognizer
    from fer.export import Probabilities, calibration_faces, export_onnx
    from fer.video import stream

    parser = argparse.ArgumentParser(prog="fer bench infer", description=bench_infer.__doc__)
    add_model_options(parser)
    parser.add_argument("--face", type=Path, help="face image for the video (default: a synthetic face)")
    parser.add_argument("--runs", type=int, default=300, help="timed batch-1 calls per runtime")
    parser.add_argument("--rounds", type=int, default=5,
                        help="the runtimes take turns in this many rounds of runs/rounds calls each")
    parser.add_argument("--batch", type=int, default=64, help="batch size of the throughput measurement")
    parser.add_argument("--frames", type=int, default=300, help="frames of the pipeline video")
    parser.add_argument("--detect-every", type=int, default=1, help="search for faces every Nth frame only")
    parser.add_argument("--calibration_data", help="also measure the int8 ONNX model calibrated on this training "
                        "data (see `fer export --quantize int8`); the pipeline then uses it")
    parser.add_argument("--tta_flip", choices=["true", "false"], help="override the mirror-image averaging")
    parser.add_argument("--tta_shift", type=int, help="override the shifted test-time views (pixels; 0: none)")
    args = parser.parse_args(argv)

    recognizer = load_recognizer(args)
    module = recognizer.module
    if args.tta_flip:
        module.hparams.tta_flip = args.tta_flip == "true"
    if args.tta_shift is not None:
        module.hparams.tta_shift = args.tta_shift
    side, chans = module.hparams.image_size, module.hparams.in_chans
    one, batch = torch.rand(1, chans, side, side), torch.rand(args.batch, chans, side, side)
    results: dict = {"backbone": module.hparams.backbone, "tta_flip": module.hparams.tta_flip,
                     "tta_shift": module.hparams.tta_shift, "tta_crop": module.hparams.tta_crop,
                     "image_size": side, "threads": 1, "runtimes": {}}
    with tempfile.TemporaryDirectory() as tmp, torch_threads(1), torch.inference_mode():
        gmacs = face_gmacs(module)
        rate = matmul_gflops(torch.float32)
        results["fp32_estimate"] = {"forward_gmacs_per_face": round(gmacs, 4), "fp32_matmul_gflops_1_thread": rate,
                            "fp32_ms_at_matmul_rate": round(2 * gmacs / rate * 1000, 3)}
        print(json.dumps(results["fp32_estimate"]), flush=True)
        eager = Probabilities(module)
        scripted = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(eager, one).eval()))
        exports = {"": export_onnx(module, Path(tmp) / "model.onnx")}
        if args.calibration_data:
            exports["_int8"] = export_onnx(module, Path(tmp) / "model.onnx", "int8",
                                           calibration_faces(args.calibration_data, side))
        onnx = {f"onnxruntime{q}": OnnxClassifier(path, threads=1) for q, path in exports.items()}
        try:
            onnx |= {f"onnxruntime_openvino{q}": OnnxClassifier(path, threads=1, provider="openvino")
                     for q, path in exports.items()}
        except (ImportError, RuntimeError) as error:
            results["openvino"] = str(error)
        runtimes = {"eager": eager, "torchscript": scripted,
                    **{name: (lambda x, c=classifier: c(x.numpy())) for name, classifier in onnx.items()}}
        rows = interleaved_latency_ms({name: (lambda r=run: r(one)) for name, run in runtimes.items()},
                                      args.runs, args.rounds)
        for name, run in runtimes.items():
            row = rows[name]
            seconds = latency_ms(lambda r=run: r(batch), 10, warmup=2)["p50_ms"] / 1000
            row["batch_images_per_s"] = round(args.batch / seconds, 1)
            results["runtimes"][name] = row
            print(json.dumps({name: row}), flush=True)

        face = (np.asarray(Image.open(args.face).convert("L")) if args.face
                else render_face("happy", np.random.default_rng(0), 48))
        video = Path(tmp) / "face.mp4"
        _face_video(video, face, args.frames)
        # the pipeline classifies with ONNX Runtime (int8 if measured, on OpenVINO where it runs), as a deployment would
        classifier = list(onnx)[-1]
        recognizer.onnx = onnx[classifier]
        detector = recognizer.detector
        frame = cv2.cvtColor(cv2.VideoCapture(str(video)).read()[1], cv2.COLOR_BGR2RGB)
        stats = stream(recognizer, video, detect_every=args.detect_every)
        results["pipeline"] = {
            "video": "640x480", "classifier": classifier, "frames": stats["frames"], "faces_found": stats["faces"],
            "detector": args.detector, "detect_every": args.detect_every, "detect_side": detector.max_side,
            "min_face": detector.min_size,
            "frames_per_s": round(stats["fps"], 1),
            "detector_ms": latency_ms(lambda: detector(frame), 20, warmup=2)["p50_ms"],
        }
    return results


def bench_models(argv: Sequence[str]) -> dict:
    """Shipped models (or checkpoints) side by side as a deployment runs them: each one's int8 ONNX export, its
    test-time views inside, timed in turns at batch 1 on one thread, and faces/s at a larger batch."""
    from fer.api import SHIPPED_MODELS, OnnxClassifier, model_path
    from fer.export import calibration_faces, export_onnx
    from fer.training.module import EmotionClassifier

    parser = argparse.ArgumentParser(prog="fer bench models", description=bench_models.__doc__)
    parser.add_argument("--ckpt", nargs="+", default=list(SHIPPED_MODELS),
                        help=f"shipped models' names or checkpoints (default: all of {', '.join(SHIPPED_MODELS)})")
    parser.add_argument("--calibration_data", required=True,
                        help="training data the int8 exports are calibrated on (see `fer export --quantize int8`)")
    parser.add_argument("--runs", type=int, default=500, help="timed batch-1 calls per model")
    parser.add_argument("--rounds", type=int, default=5,
                        help="the models take turns in this many rounds of runs/rounds calls each")
    parser.add_argument("--batch", type=int, default=64, help="batch size of the throughput measurement")
    args = parser.parse_args(argv)

    results: dict = {"machine": machine_label(machine_facts()), "runtime": "onnxruntime int8, 1 thread",
                     "models": {}}
    classifiers, inputs, calibration = {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp, torch_threads(1), torch.inference_mode():
        for i, name in enumerate(args.ckpt):
            path = model_path(name)
            module = EmotionClassifier.load_from_checkpoint(path, map_location="cpu", weights_only=False).eval()
            side, chans = module.hparams.image_size, module.hparams.in_chans
            if side not in calibration:  # the training data decoded once per input size, not once a model
                calibration[side] = calibration_faces(args.calibration_data, side)
            int8 = export_onnx(module, Path(tmp) / f"model{i}.onnx", "int8", calibration[side])
            classifiers[name] = OnnxClassifier(int8, threads=1)
            inputs[name] = np.random.default_rng(0).random((args.batch, chans, side, side), np.float32)
            results["models"][name] = {"gmacs_per_face": round(face_gmacs(module), 4),
                                       "file_mb": round(path.stat().st_size / 1e6, 1)}
        rows = interleaved_latency_ms({name: (lambda c=c, x=inputs[name][:1]: c(x)) for name, c in classifiers.items()},
                                      args.runs, args.rounds)
        for name, classifier in classifiers.items():
            seconds = latency_ms(lambda c=classifier, x=inputs[name]: c(x), 10, warmup=2)["p50_ms"] / 1000
            results["models"][name] |= {**rows[name], "batch_faces_per_s": round(args.batch / seconds, 1)}
            print(json.dumps({name: results["models"][name]}), flush=True)
    return results


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024


def bench_serve(argv: Sequence[str]) -> dict:
    """A bounded load test of the web API on loopback: ``--clients`` threads post a face photo for
    ``--seconds``; latency p50/p99, requests/s, errors (anything but 200) and the process's memory."""
    import io
    import threading

    import httpx

    from fer.api import add_model_options, load_recognizer
    from fer.serve import create_app, running

    parser = argparse.ArgumentParser(prog="fer bench serve", description=bench_serve.__doc__)
    add_model_options(parser)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args(argv)

    recognizer = load_recognizer(args)
    photo = Image.fromarray(np.random.default_rng(0).integers(60, 200, (480, 640), dtype=np.uint8))
    photo.paste(Image.fromarray(render_face("happy", np.random.default_rng(0), 160)), (240, 160))
    body = io.BytesIO()
    photo.save(body, format="JPEG")
    latencies: list[float] = []
    errors: list[str] = []
    rss = [_rss_mb()]

    def client() -> None:
        with httpx.Client(base_url=base, timeout=30) as http:
            while time.monotonic() < stop:
                start = time.perf_counter()
                try:
                    photo = {"file": ("photo.jpg", body.getvalue(), "image/jpeg")}
                    response = http.post("predict?whole_image=true", files=photo)
                    if response.status_code != 200:
                        errors.append(f"{response.status_code}: {response.text[:200]}")
                except httpx.HTTPError as e:
                    errors.append(repr(e))
                latencies.append(time.perf_counter() - start)

    with running(create_app(recognizer)) as base:
        stop = time.monotonic() + args.seconds
        clients = [threading.Thread(target=client) for _ in range(args.clients)]
        began = time.perf_counter()
        for c in clients:
            c.start()
        while any(c.is_alive() for c in clients):
            time.sleep(min(1.0, args.seconds / 4))
            rss.append(_rss_mb())
        elapsed = time.perf_counter() - began
    latencies.sort()
    return {
        "clients": args.clients, "seconds": round(elapsed, 1), "requests": len(latencies), "errors": len(errors),
        "first_errors": errors[:3], "requests_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 1) if latencies else None,
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 1) if latencies else None,
        "rss_mb": {"start": round(rss[0], 1), "peak": round(max(rss), 1), "end": round(rss[-1], 1),
                   "samples": [round(r) for r in rss]},
    }


BENCHES = {"train": bench_train, "infer": bench_infer, "models": bench_models, "detect": bench_detect,
           "serve": bench_serve}


def bench_command(argv: Sequence[str]) -> None:
    if not argv or argv[0] not in BENCHES:
        raise SystemExit(f"usage: python -m fer bench {{{','.join(BENCHES)}}} [options]  (see --help)")
    print(json.dumps(BENCHES[argv[0]](argv[1:]), indent=2))
