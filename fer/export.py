"""``python -m fer export --ckpt … --format onnx|torchscript|checkpoint [--quantize int8]``: a model for deployment.

``checkpoint`` writes a slim checkpoint (weights, hyper-parameters, temperature; no optimiser state), the form
in which the default model ships inside the package (``fer/weights/``).

The exported graph takes (N, 1, S, S) float32 faces scaled to [0, 1] and returns per-emotion probabilities;
input normalisation and softmax are inside it. The emotion order and input size travel with the file (ONNX
metadata, TorchScript extra file ``fer.json``), so ``EmotionRecognizer.load`` can run it without the checkpoint.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from fer.training import EmotionClassifier
from fer.training.module import net_logits, normalize_input


class Probabilities(nn.Module):
    """The trained network with its input normalisation, test-time flip, temperature and softmax, in fp32 and
    eval mode (a plain ``nn.Module``: tracing and export need none of the LightningModule around it)."""

    def __init__(self, module: EmotionClassifier) -> None:
        super().__init__()
        self.net = module.net.float().eval()
        self.normalize, self.tta_flip = module.hparams.normalize, module.hparams.tta_flip
        self.temperature = module.temperature
        self.eval()

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        logits = net_logits(self.net, normalize_input(image, self.normalize), self.tta_flip)
        return (logits / self.temperature).softmax(-1)


def model_info(module: EmotionClassifier) -> dict:
    return {"emotions": list(module.emotions), "image_size": module.hparams.image_size,
            "in_chans": module.hparams.in_chans, "backbone": module.hparams.backbone}


def export_onnx(module: EmotionClassifier, path: Path, quantize: str | None = None) -> Path:
    import onnx

    info = model_info(module)
    example = torch.rand(2, info["in_chans"], info["image_size"], info["image_size"])
    program = torch.onnx.export(
        Probabilities(module), (example,), input_names=["image"], output_names=["probabilities"],
        dynamic_shapes=({0: torch.export.Dim("batch")},), dynamo=True, verbose=False,
    )
    program.save(str(path))
    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, {"fer": json.dumps(info)})
    onnx.save(model, str(path))
    if quantize == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantized = path.with_name(path.stem + ".int8.onnx")
        quantize_dynamic(str(path), str(quantized), weight_type=QuantType.QInt8, per_channel=True)
        return quantized
    return path


def export_torchscript(module: EmotionClassifier, path: Path) -> Path:
    info = model_info(module)
    example = torch.rand(1, info["in_chans"], info["image_size"], info["image_size"])
    traced = torch.jit.trace(Probabilities(module), example)
    torch.jit.save(traced, str(path), _extra_files={"fer.json": json.dumps(info)})
    return path


def export_command(argv: Sequence[str]) -> Path:
    parser = argparse.ArgumentParser(prog="fer export", description=__doc__)
    parser.add_argument("--ckpt", required=True, help="checkpoint from fit or EmotionRecognizer.save")
    parser.add_argument("--format", choices=["onnx", "torchscript", "checkpoint"], default="onnx")
    parser.add_argument("--quantize", choices=["int8"], help="ONNX only: int8 weights (dynamic quantisation)")
    parser.add_argument("--output", type=Path, help="file to write (default: next to the checkpoint)")
    args = parser.parse_args(argv)
    if args.quantize and args.format != "onnx":
        parser.error("--quantize works with --format onnx")
    suffix = {"onnx": ".onnx", "torchscript": ".pt", "checkpoint": ".slim.ckpt"}[args.format]
    output = args.output or Path(args.ckpt).with_suffix(suffix)
    if args.format == "checkpoint":
        from fer.api import EmotionRecognizer

        EmotionRecognizer.load(args.ckpt).save(str(output))
        print(f"Wrote {output}")
        return output
    module = EmotionClassifier.load_from_checkpoint(args.ckpt, map_location="cpu", weights_only=False)
    written = export_onnx(module, output, args.quantize) if args.format == "onnx" else export_torchscript(module, output)
    print(f"Wrote {written}")
    return written
