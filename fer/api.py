"""``EmotionRecognizer``: the seed's Python usage, as a thin layer over the same LightningModule and DataModule."""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path
from typing import BinaryIO

import lightning as L
import matplotlib.pyplot as plt
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image

from fer.data import FERDataModule
from fer.data.reading import image_to_array
from fer.emotions import EMOTIONS
from fer.faces import (
    DEFAULT_DETECTOR,
    DETECTORS,
    Box,
    FaceDetector,
    as_gray,
    create_detector,
    crop,
    load_image,
)
from fer.reports import write_confusion
from fer.runs import SHIPPED_WEIGHTS
from fer.training import EmotionClassifier, Trainer, ensemble_of
from fer.video import stream

ImageLike = str | Path | Image.Image | np.ndarray
# The models that ship inside the package, by the name load() and --ckpt accept (MODEL_CARD.md describes each).
SHIPPED_MODELS = {
    "fer2013": SHIPPED_WEIGHTS / "fer2013_vgg.ckpt",  # seven emotions, FER2013's labels: the default
    "ferplus": SHIPPED_WEIGHTS / "ferplus_vgg.ckpt",  # eight (contempt too), FER+'s votes
    "ensemble": SHIPPED_WEIGHTS / "ensemble.ckpt",  # fer2013 (its file, referred to) and a second network averaged
    "fast": SHIPPED_WEIGHTS / "fast_vgg.ckpt",  # a small network taught by fer2013 and others: 1/18 of its work a face
}
DEFAULT_MODEL = "fer2013"


def model_path(name_or_path: str | Path | None) -> Path:
    """The file of a shipped model's name (``SHIPPED_MODELS``; ``None``: the default), else the path itself."""
    name = str(name_or_path or DEFAULT_MODEL)
    if name not in SHIPPED_MODELS:
        path = Path(name)
        if not path.exists() and not path.suffix and len(path.parts) == 1:
            raise ValueError(f"Unknown model {name!r}: expected a shipped model's name "
                             f"({', '.join(SHIPPED_MODELS)}) or a checkpoint or .onnx file")
        return path
    path = SHIPPED_MODELS[name]
    if not path.is_file():
        raise FileNotFoundError(
            f"No {name!r} model at {path}: train one (python -m fer fit --config configs/vgg_half.yaml) and pass "
            "its checkpoint, e.g. EmotionRecognizer.load('runs/vgg_half/version_0/checkpoints/last.ckpt')"
        )
    return path


class EmotionRecognizer:
    """Train, save, load, evaluate and run an emotion model from Python.

    Args:
        backbone: any registered backbone or timm model name (see ``fer.models``).
        emotions: the classes, a subset of the canonical seven.
        detector: finds faces in photos: a name from ``fer.faces.DETECTORS`` (default ``mtcnn``) or any callable
            that gives ``Box``es (``fer.faces.FaceDetector``).
        align: turn each face so that its eyes are level before it is cropped, where the detector finds eyes.
        **model_kwargs: further ``EmotionClassifier`` arguments (``drop_rate``, ``image_size``, …).
    """

    def __init__(self, backbone: str = "baseline", emotions: list[str] = list(EMOTIONS),  # noqa: B006 (never mutated)
                 detector: str | FaceDetector = DEFAULT_DETECTOR, align: bool = True, **model_kwargs) -> None:
        self.module = EmotionClassifier(backbone=backbone, emotions=emotions, **model_kwargs)
        self.detector = create_detector(detector) if isinstance(detector, str) else detector
        self.align = align
        self.log_dir: Path | None = None

    onnx: OnnxClassifier | None = None  # set by load() for .onnx files: inference without torch

    @property
    def emotions(self) -> list[str]:
        return self.onnx.emotions if self.onnx else self.module.emotions

    @property
    def image_size(self) -> int:
        return self.onnx.image_size if self.onnx else self.module.hparams.image_size

    # -- training and evaluation ------------------------------------------------------------------------------
    def _datamodule(self, batch_size: int = 128, **kwargs) -> FERDataModule:
        return FERDataModule(emotions=self.emotions, image_size=self.image_size,
                             batch_size=batch_size, **kwargs)

    def train(self, train_path: str, validation_path: str | None = None, epochs: int = 70, batch_size: int = 128,
              lr: float = 1e-3, patience: int = 10, log_dir: str = "runs", **trainer_kwargs) -> EmotionRecognizer:
        """Train on ``train_path/<emotion>/*`` (validation: ``validation_path``, else a stratified split),
        with early stopping on validation accuracy; the best weights are kept. ``trainer_kwargs`` go to the
        Lightning ``Trainer``; its ``precision`` is ``auto`` unless given (``fer.hardware``)."""
        splits = {"train": train_path, **({"validation": validation_path} if validation_path else {})}
        dm = self._datamodule(batch_size, data_dir=None, split_dirs=splits)
        self.module.optimizer_factory = partial(torch.optim.Adam, lr=lr)
        checkpoint = ModelCheckpoint(monitor="val/acc", mode="max")
        trainer = Trainer(
            max_epochs=epochs, logger=TensorBoardLogger(log_dir, name="recognizer", default_hp_metric=False),
            callbacks=[checkpoint, ModelCheckpoint(filename="last"),
                       EarlyStopping(monitor="val/acc", mode="max", patience=patience)],
            **trainer_kwargs,
        )
        trainer.fit(self.module, dm)
        self.log_dir = Path(trainer.log_dir)
        if checkpoint.best_model_path:
            best = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=False)
            self.module.load_state_dict(best["state_dict"])
        return self

    def evaluate(self, test_path: str, batch_size: int = 128, out_dir: str | None = None) -> dict:
        """Accuracy, macro-F1, per-class recall, confusion matrix and expected calibration error (15 bins)
        without and with the model's temperature on ``test_path/<emotion>/*``. The confusion matrix's figure and
        JSON (``evaluate_confusion_matrix.{png,json}``) go to ``out_dir``, or by default to the folder of the run
        ``train`` made; a loaded model with no ``out_dir`` writes no file."""
        dm = self._datamodule(batch_size, data_dir=None, split_dirs={"test": test_path})
        trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
        (metrics,) = trainer.test(self.module, dm, verbose=False)
        confusion = self.module.last_test_confusion
        if out_dir or self.log_dir:
            write_confusion(confusion, self.emotions, Path(out_dir or self.log_dir), "evaluate_confusion_matrix")
        return {
            "accuracy": metrics["test/acc"],
            "macro_f1": metrics["test/f1"],
            "per_class": {e: metrics[f"test/recall/{e}"] for e in self.emotions},
            "confusion_matrix": confusion.tolist(),
            "ece_uncalibrated": metrics["test/ece_uncalibrated"],
            "ece": metrics["test/ece"],
            "temperature": self.module.temperature,
            "labels": list(self.emotions),
        }

    def plot_training_history(self, path: str | None = None) -> plt.Figure:
        """Loss and accuracy per epoch of the last ``train`` run, from its TensorBoard logs."""
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        if self.log_dir is None:
            raise RuntimeError("No training history: call train() first")
        events = EventAccumulator(str(self.log_dir), size_guidance={"scalars": 0})
        events.Reload()
        fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 3.5))
        for ax, metric in ((loss_ax, "loss"), (acc_ax, "acc")):
            for stage, tag in (("train", f"train/{metric}" + ("_epoch" if metric == "loss" else "")),
                               ("validation", f"val/{metric}")):
                if tag in events.Tags()["scalars"]:
                    values = [e.value for e in events.Scalars(tag)]
                    ax.plot(range(1, len(values) + 1), values, marker="o", label=stage)
            ax.set_xlabel("epoch")
            ax.set_title(metric)
            ax.legend()
        fig.tight_layout()
        fig.savefig(path or self.log_dir / "training_history.png")
        return fig

    # -- persistence -----------------------------------------------------------------------------------------
    def save(self, path: str, half: bool = False) -> None:
        """A Lightning-compatible checkpoint: weights plus hyper-parameters (the emotion order included).
        ``half``: store the floating-point weights in fp16, half the file; loading turns them back into fp32."""
        hparams = {k: v for k, v in self.module.hparams.items() if k not in ("optimizer", "scheduler")}
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial_file = path.with_name(path.name + ".partial")  # renamed when whole: a crash never leaves half a file
        state = {k: v.half() if half and v.is_floating_point() else v for k, v in self.module.state_dict().items()}
        checkpoint = {"state_dict": state, "hyper_parameters": hparams, "pytorch-lightning_version": L.__version__}
        self.module.on_save_checkpoint(checkpoint)  # what the module adds to every checkpoint (its temperature)
        torch.save(checkpoint, partial_file)
        partial_file.replace(path)

    @classmethod
    def load(cls, path: str | Path | None = None, detector: str | FaceDetector = DEFAULT_DETECTOR, align: bool = True,
             onnx_provider: str = "cpu") -> EmotionRecognizer:
        """Load a model that ships with fer by its name (``"fer2013"``, the default, or ``"ferplus"``: see
        ``SHIPPED_MODELS`` and MODEL_CARD.md), a checkpoint written by ``save`` or by training with the CLI, or an
        ``.onnx`` file from ``python -m fer export`` (then prediction runs on ONNX Runtime, through
        ``onnx_provider``: see ``OnnxClassifier``; training and evaluation need a checkpoint). ``detector`` and
        ``align``: as for ``EmotionRecognizer``."""
        path = model_path(path)
        if onnx_provider != "cpu" and not str(path).endswith(".onnx"):
            raise ValueError(f"onnx_provider={onnx_provider!r} runs .onnx exports, and {path} is a checkpoint: export "
                             "it first (python -m fer export --ckpt … --format onnx [--quantize int8 …])")
        if str(path).endswith(".onnx"):
            return cls._of(None, OnnxClassifier(path, provider=onnx_provider), detector, align)
        module = EmotionClassifier.load_from_checkpoint(path, map_location="cpu", weights_only=False)
        return cls._of(module, None, detector, align)

    @classmethod
    def ensemble(cls, members: list[str | Path], weights: list[float] | None = None,
                 detector: str | FaceDetector = DEFAULT_DETECTOR, align: bool = True) -> EmotionRecognizer:
        """The weighted mean (default: equal weights) of the calibrated probabilities of several models, each a
        shipped model's name or a checkpoint, as one model: ``save`` it, or export it to one ONNX graph
        (``python -m fer export --ckpt A B …``). The members must share their emotions, in the same order."""
        return cls._of(ensemble_of([model_path(m) for m in members], weights), None, detector, align)

    @classmethod
    def _of(cls, module: EmotionClassifier | None, onnx: OnnxClassifier | None, detector: str | FaceDetector,
            align: bool) -> EmotionRecognizer:
        recognizer = cls.__new__(cls)
        recognizer.module, recognizer.onnx = module, onnx
        recognizer.detector = create_detector(detector) if isinstance(detector, str) else detector
        recognizer.align, recognizer.log_dir = align, None
        return recognizer

    # -- prediction --------------------------------------------------------------------------------------------
    def _classify(self, crops: list[np.ndarray]) -> np.ndarray:
        """Probabilities (N, emotions) of grayscale face crops, in one batch."""
        return self.face_probabilities(np.stack([image_to_array(Image.fromarray(c), self.image_size) for c in crops]))

    def face_probabilities(self, faces: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Probabilities (N, emotions) of (N, S, S) uint8 faces already at the model's input size."""
        out = []
        for i in range(0, len(faces), batch_size):
            batch = np.asarray(faces[i:i + batch_size])[:, None].astype(np.float32) / 255
            if self.onnx:
                out.append(self.onnx(batch))
            else:
                with torch.inference_mode():
                    out.append(self.module.eval().probabilities(torch.from_numpy(batch)).numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.emotions)), np.float32)

    def find_faces(self, image: np.ndarray, whole_image_if_no_face: bool = False) -> list[Box]:
        """Boxes of the faces in a uint8 image, (H, W, 3) RGB or (H, W) grayscale, largest first."""
        boxes = sorted(self.detector(image), key=lambda b: b.area, reverse=True)
        if not boxes and whole_image_if_no_face:
            boxes = [Box(0, 0, image.shape[1], image.shape[0])]
        return boxes

    def classify_faces(self, gray: np.ndarray, boxes: list[Box]) -> np.ndarray:
        """(len(boxes), emotions) probabilities of the faces in those boxes of a grayscale image, in one batch:
        square crops with the detector's margin, turned eyes-level first where the boxes have landmarks and
        ``align`` is on."""
        if not boxes:
            return np.zeros((0, len(self.emotions)), np.float32)
        margin = getattr(self.detector, "crop_margin", 0.1)
        return self._classify([crop(gray, b, margin, align=self.align) for b in boxes])

    def predict_faces(self, image: ImageLike | BinaryIO, whole_image_if_no_face: bool = False,
                      name: str | None = None) -> list[dict]:
        """Every face in ``image``: ``{"box": [x, y, w, h], "label", "probabilities": {emotion: p}}``, with the
        detector's ``"score"`` and five ``"landmarks"`` ([x, y] each: eyes, nose, mouth corners) where it gives
        them; largest first. No face gives ``[]``, or with ``whole_image_if_no_face`` the whole image as one face
        (right for pre-cropped 48×48 data). An unreadable image raises ``FERDataError`` naming ``name``."""
        pixels = load_image(image, name)
        boxes = self.find_faces(pixels, whole_image_if_no_face)
        probs = self.classify_faces(as_gray(pixels), boxes)
        return [_face(b, self.emotions, p) for b, p in zip(boxes, probs)]

    def predict_realtime(self, source: int | str = 0, output: str | None = None, show: bool = True,
                         smoothing: int = 5, max_frames: int | None = None, detect_every: int = 1) -> dict:
        """Annotate live video (webcam index, video file or stream URL): see ``fer.video.stream``."""
        return stream(self, source, output, show, smoothing, max_frames, detect_every)

    def predict(self, image: ImageLike) -> str:
        """The emotion of the most prominent (largest) face, or of the whole image when no face is found."""
        return self.predict_faces(image, whole_image_if_no_face=True)[0]["label"]


def _face(box: Box, emotions: list[str], probs: np.ndarray) -> dict:
    face = {"box": box.as_list(), "label": emotions[int(probs.argmax())],
            "probabilities": {e: round(float(v), 5) for e, v in zip(emotions, probs)}}
    if box.score is not None:
        face["score"] = round(float(box.score), 4)
    if box.landmarks:
        face["landmarks"] = [[round(x, 1), round(y, 1)] for x, y in box.landmarks]
    return face


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """``--ckpt``, ``--onnx_provider`` and the face detector's options, for the commands that run a trained model
    (see ``load_recognizer``)."""
    parser.add_argument("--ckpt", help=f"a shipped model's name ({', '.join(SHIPPED_MODELS)}; default "
                        f"{DEFAULT_MODEL}) or a checkpoint or .onnx file")
    parser.add_argument("--onnx_provider", choices=["cpu", "openvino"], default="cpu",
                        help="runtime for an .onnx --ckpt: ONNX Runtime's own CPU kernels, or its OpenVINO provider "
                             "(Intel CPUs; twice as fast in int8 on AMX Xeons; pip install -e '.[openvino]')")


    parser.add_argument("--detector", choices=list(DETECTORS), default=DEFAULT_DETECTOR,
                        help=f"face detector (default: {DEFAULT_DETECTOR}; docs/inference.md compares them)")
    parser.add_argument("--detector-model", help="the detector's own files instead of the installed ones: a folder "
                        "with MTCNN's pnet.lz4, rnet.lz4 and onet.lz4, or a Haar cascade .xml")
    parser.add_argument("--min-face", type=int, help="smallest face searched for, in the image's pixels (larger is "
                        "faster; default: mtcnn 20, haar 24)")
    parser.add_argument("--detector-threshold", type=float,
                        help="lowest detector score kept (default: mtcnn 0.8 of 1; haar keeps every box)")
    parser.add_argument("--detect-side", type=int,
                        help="search for faces in images downscaled to this longer side (faster; default: mtcnn "
                             "1280, haar 640)")
    parser.add_argument("--no-align", dest="align", action="store_false",
                        help="crop faces as found, without turning them so that the eyes are level")


def detector_from_args(args: argparse.Namespace) -> FaceDetector:
    """The face detector that ``add_model_options``'s options describe."""
    options = {"min_size": args.min_face, "threshold": args.detector_threshold, "max_side": args.detect_side,
               ("weights_dir" if args.detector == "mtcnn" else "cascade"): args.detector_model}
    return create_detector(args.detector, **{k: v for k, v in options.items() if v is not None})


def load_recognizer(args: argparse.Namespace) -> EmotionRecognizer:
    return EmotionRecognizer.load(args.ckpt, detector=detector_from_args(args), align=args.align,
                                  onnx_provider=args.onnx_provider)


class OnnxClassifier:
    """An exported model on ONNX Runtime (CPU): (N, 1, S, S) float32 faces in [0, 1] → probabilities.

    ``provider="openvino"`` runs it through the OpenVINO execution provider (``pip install -e ".[openvino]"`` in
    a clone), whose int8 convolutions use the AMX tile units of recent Intel Xeons: about twice as fast as ONNX
    Runtime's own CPU kernels there (docs/performance.md). The default ``"cpu"`` is ONNX Runtime's own.
    """

    def __init__(self, path: str | Path, threads: int = 1, provider: str = "cpu") -> None:
        import json

        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        if provider == "openvino":
            config = {"CPU": {"INFERENCE_NUM_THREADS": str(threads)}}
            options.add_provider_for_devices([openvino_cpu_device()], {"load_config": json.dumps(config)})
            self.session = ort.InferenceSession(str(path), options)
        elif provider == "cpu":
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        else:
            raise ValueError(f"provider: expected 'cpu' or 'openvino', got {provider!r}")
        info = json.loads(self.session.get_modelmeta().custom_metadata_map["fer"])
        self.emotions, self.image_size = info["emotions"], info["image_size"]

    def __call__(self, faces: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"image": faces})[0]


_REGISTERED: set[str] = set()


def openvino_cpu_device():
    """ONNX Runtime's handle on the CPU as the OpenVINO execution provider sees it (its plugin registered once)."""
    import onnxruntime as ort

    try:
        import onnxruntime_ep_openvino as plugin
    except ImportError as error:
        raise ImportError("provider 'openvino' needs the OpenVINO execution provider: pip install "
                          "onnxruntime-ep-openvino (or, in a clone of fer, pip install -e '.[openvino]')") from error
    name = plugin.get_ep_name()
    if name not in _REGISTERED:  # once a process: where it offers no device (AMD), get_ep_devices cannot tell
        ort.register_execution_provider_library(name, plugin.get_library_path())
        _REGISTERED.add(name)
    devices = [d for d in ort.get_ep_devices() if d.ep_name == name and d.device.type == ort.OrtHardwareDeviceType.CPU]
    if not devices:
        raise RuntimeError("provider 'openvino': the OpenVINO execution provider offers no CPU device on this machine "
                           "(it supports Intel CPUs); use provider='cpu'")
    return devices[0]
