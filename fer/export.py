"""``python -m fer export --ckpt … --format onnx|torchscript|checkpoint [--quantize int8 --calibration_data …]
[--tta_flip false] [--half]``: a model for deployment (``--ckpt A B … --weights …``: an ensemble).

Several ``--ckpt`` make one ensemble of them (``EmotionRecognizer.ensemble``): the weighted mean of their
calibrated probabilities, each member with its own test-time views, as one checkpoint or one graph.

``checkpoint`` writes a slim checkpoint (weights, hyper-parameters, temperature; no optimiser state), the form
in which the default model ships inside the package (``fer/weights/``); ``--half`` stores its weights in fp16.

The exported graph takes (N, 1, S, S) float32 faces scaled to [0, 1] and returns per-emotion probabilities;
input normalisation and softmax are inside it. The emotion order and input size travel with the file (ONNX
metadata, TorchScript extra file ``fer.json``), so ``EmotionRecognizer.load`` can run it without the checkpoint.

``--quantize int8`` quantises weights and activations statically (QDQ, per-channel weights), with activation
ranges calibrated on training faces: about 3.5× faster than fp32 on one CPU thread with top-1 kept on ~99% of
faces (MODEL_CARD.md). ONNX Runtime's dynamic quantisation, which needs no calibration, made this kind of conv
net 4× *slower* than fp32.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fer.models.ensemble import Ensemble
from fer.models.views import net_logits, normalize_input
from fer.training import EmotionClassifier


class Probabilities(nn.Module):
    """The trained network with its input normalisation, test-time views, temperature and softmax, in fp32 and
    eval mode (a plain ``nn.Module``: tracing and export need none of the LightningModule around it)."""

    def __init__(self, module: EmotionClassifier, tta_flip: bool | None = None) -> None:
        super().__init__()
        self.net = module.net.float().eval()
        self.normalize = module.hparams.normalize
        self.tta_flip = module.hparams.tta_flip if tta_flip is None else tta_flip
        if isinstance(self.net, Ensemble) and tta_flip is not None:  # each member's mirror, not one around them all
            self.net = copy.copy(self.net)  # the same members; the caller's model keeps its own views
            self.net.specs = [{**spec, "tta_flip": tta_flip} for spec in self.net.specs]
            self.tta_flip = module.hparams.tta_flip
        self.tta_shift, self.tta_crop = module.hparams.tta_shift, module.hparams.tta_crop
        self.temperature = module.temperature
        self.eval()

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        logits = net_logits(self.net, normalize_input(image, self.normalize), self.tta_flip, self.tta_shift,
                            self.tta_crop)
        return (logits / self.temperature).softmax(-1)


def model_info(module: EmotionClassifier) -> dict:
    return {"emotions": list(module.emotions), "image_size": module.hparams.image_size,
            "in_chans": module.hparams.in_chans, "backbone": module.hparams.backbone}


def calibration_faces(data_dir: str, image_size: int, count: int = 512) -> np.ndarray:
    """``count`` training faces (a fixed random pick) of ``data_dir`` as (N, 1, S, S) float32 in [0, 1]."""
    from fer.data import FERDataModule

    dm = FERDataModule(data_dir, image_size=image_size, num_workers=0)
    dm.setup("fit")
    images = dm.tables["train"].images
    pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:count]
    return (images[pick, None].float() / 255).numpy()


def _set_metadata(path: Path, info: dict) -> None:
    import onnx

    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, {"fer": json.dumps(info)})
    onnx.save(model, str(path))


def _quantize_int8(source: Path, target: Path, calibration: np.ndarray) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(calibration[i:i + 64] for i in range(0, len(calibration), 64))

        def get_next(self) -> dict | None:
            batch = next(self.batches, None)
            return None if batch is None else {"image": batch}

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"  # shapes inferred and graph optimised, as the quantiser expects
        quant_pre_process(str(source), str(prepared))
        # 7-bit weights (reduce_range): without VNNI (AVX2-only CPUs) ONNX Runtime's u8 x s8 products saturate
        # 16-bit sums, and an export must run on any CPU.
        quantize_static(str(prepared), str(target), Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                        reduce_range=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


def export_onnx(module: EmotionClassifier, path: Path, quantize: str | None = None,
                calibration: np.ndarray | None = None, tta_flip: bool | None = None) -> Path:
    """Write ``path`` (and, with ``quantize="int8"``, return its ``.int8.onnx`` sibling, calibrated on
    ``calibration`` faces: asked for ``X.int8.onnx``, the float model goes to ``X.onnx``). ``tta_flip`` overrides
    the checkpoint's mirror-image averaging."""
    if quantize == "int8" and path.name.endswith(".int8.onnx"):
        path = path.with_name(path.name.removesuffix(".int8.onnx") + ".onnx")
    info = model_info(module)
    example = torch.rand(2, info["in_chans"], info["image_size"], info["image_size"])
    model = Probabilities(module, tta_flip)
    # A channels-last network exports the flatten before its classifier as index arithmetic (Shape, Range,
    # Gather) that OpenVINO's int8 passes get wrong (-7 points); an NCHW copy exports a plain Reshape.
    model.net = copy.deepcopy(model.net).to(memory_format=torch.contiguous_format)
    program = torch.onnx.export(
        model, (example,), input_names=["image"], output_names=["probabilities"],
        dynamic_shapes=({0: torch.export.Dim("batch")},), dynamo=True, verbose=False,
    )
    program.save(str(path))
    _set_metadata(path, info)
    if quantize == "int8":
        if calibration is None:
            raise ValueError("int8 quantisation needs calibration faces (--calibration_data: the training data)")
        quantized = path.with_name(path.stem + ".int8.onnx")
        _quantize_int8(path, quantized, calibration)
        _set_metadata(quantized, info)  # the quantiser writes a new model without it
        return quantized
    return path


def export_torchscript(module: EmotionClassifier, path: Path, tta_flip: bool | None = None) -> Path:
    info = model_info(module)
    example = torch.rand(1, info["in_chans"], info["image_size"], info["image_size"])
    traced = torch.jit.trace(Probabilities(module, tta_flip), example)
    torch.jit.save(traced, str(path), _extra_files={"fer.json": json.dumps(info)})
    return path


def export_command(argv: Sequence[str]) -> Path:
    parser = argparse.ArgumentParser(prog="fer export", description=__doc__)
    parser.add_argument("--ckpt", required=True, nargs="+",
                        help="checkpoint from fit or EmotionRecognizer.save, or a shipped model's name (fer2013, …); "
                        "several: one ensemble of them, the mean of their calibrated probabilities")
    parser.add_argument("--weights", type=float, nargs="+", help="with several --ckpt: a weight each (default: equal)")
    parser.add_argument("--format", choices=["onnx", "torchscript", "checkpoint"], default="onnx")
    parser.add_argument("--quantize", choices=["int8"], help="ONNX only: int8 weights and activations")
    parser.add_argument("--calibration_data", help="with --quantize: training data whose faces calibrate the int8 "
                        "activation ranges (a data_dir: folder tree, fer2013.csv or 'synthetic')")
    parser.add_argument("--tta_flip", choices=["true", "false"],
                        help="average each face with its mirror image (default: as the checkpoint was trained; "
                             "for an ensemble, each member's mirror image)")
    parser.add_argument("--half", action="store_true",
                        help="checkpoint only: store the weights in fp16 (half the file; loaded back as fp32)")
    parser.add_argument("--output", type=Path, help="file to write (default: next to the checkpoint)")
    args = parser.parse_args(argv)
    if args.quantize and args.format != "onnx":
        parser.error("--quantize works with --format onnx")
    if args.quantize and not args.calibration_data:
        parser.error("--quantize int8 needs --calibration_data (e.g. data/fer2013): int8 activation ranges are "
                     "calibrated on a few hundred training faces")
    if args.half and args.format != "checkpoint":
        parser.error("--half works with --format checkpoint (for a smaller ONNX model use --quantize int8)")
    if args.tta_flip and args.format == "checkpoint":
        parser.error("--tta_flip works with --format onnx or torchscript")
    tta_flip = None if args.tta_flip is None else args.tta_flip == "true"
    suffix = {"onnx": ".onnx", "torchscript": ".pt", "checkpoint": ".slim.ckpt"}[args.format]
    if len(args.ckpt) > 1 and not args.output:
        parser.error("an ensemble (several --ckpt) needs --output")
    if args.weights and len(args.weights) != len(args.ckpt):
        parser.error(f"--weights: expected one a --ckpt ({len(args.ckpt)}), got {len(args.weights)}")
    output = args.output or Path(args.ckpt[0]).with_suffix(suffix)  # a shipped model's name: <name><suffix>, here
    from fer.api import EmotionRecognizer

    recognizer = (EmotionRecognizer.load(args.ckpt[0]) if len(args.ckpt) == 1 else
                  EmotionRecognizer.ensemble(args.ckpt, args.weights))
    if args.format == "checkpoint":
        recognizer.save(str(output), half=args.half)
        print(f"Wrote {output}")
        return output
    module = recognizer.module
    if args.format == "onnx":
        calibration = calibration_faces(args.calibration_data, module.hparams.image_size) if args.quantize else None
        written = export_onnx(module, output, args.quantize, calibration, tta_flip)
    else:
        written = export_torchscript(module, output, tta_flip)
    print(f"Wrote {written}")
    return written
