"""The LightningModule that trains, evaluates and runs any registered architecture."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import lightning as L
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torchmetrics import MaxMetric, MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassCalibrationError,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassRecall,
)
from torchvision.transforms import v2

from fer.emotions import EMOTIONS, check_emotions
from fer.errors import ConfigError
from fer.models import create_model
from fer.models.views import net_logits, normalize_input
from fer.reports import confusion_figure, write_confusion
from fer.runs import check_checkpoint, network_state, shipped_network_state

log = logging.getLogger(__name__)
STAGES = ("train", "val", "test")  # ModuleDict keys get a "_" suffix: "train" is an nn.Module attribute


def _check_takes_side(net: torch.nn.Module, backbone: str, in_chans: int, side: int, option: str) -> None:
    """Fail before the first step, naming ``option``, if ``net`` does not take ``side``-px faces (the seed's CNN
    takes only one input side)."""
    was_training = net.training
    try:
        with torch.no_grad():
            net.eval()(torch.zeros(1, in_chans, side, side))
    except RuntimeError as err:
        raise ConfigError(f"{option}: backbone {backbone!r} does not take {side}-px crops ({err}); "
                          f"use one that takes any input size, e.g. vgg or a timm model") from err
    finally:
        net.train(was_training)


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature T minimising the negative log-likelihood of ``softmax(logits / T)`` (Guo et al., "On
    Calibration of Modern Neural Networks", ICML 2017); fitted on log T so it stays positive."""
    with torch.inference_mode(False), torch.enable_grad():  # callers may hold inference-mode tensors
        log_t = torch.zeros(1, requires_grad=True)
        optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=100, line_search_fn="strong_wolfe")
        logits, labels = logits.float().clone(), labels.long().clone()

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = F.cross_entropy(logits / log_t.exp(), labels)
            loss.backward()
            return loss

        optimizer.step(closure)
        return float(log_t.detach().exp())


def _stage_metrics(num_classes: int, with_confusion: bool) -> MetricCollection:
    metrics = {
        "acc": MulticlassAccuracy(num_classes, average="micro"),
        "f1": MulticlassF1Score(num_classes, average="macro"),
        "recall": MulticlassRecall(num_classes, average=None),
    }
    if with_confusion:
        metrics["confusion"] = MulticlassConfusionMatrix(num_classes)
    return MetricCollection(metrics)


class EmotionClassifier(L.LightningModule):
    """Cross-entropy training of ``backbone`` on faces, with accuracy, macro-F1, per-class recall and
    confusion matrices per stage.

    Args:
        backbone: registered architecture name (see ``fer.models.MODELS``).
        emotions: class names in canonical order; linked from the data module by the CLI and stored in
            every checkpoint so predictions are always decoded with the order the model was trained on.
        image_size: input side in pixels.
        in_chans: input channels (1: grayscale).
        drop_rate: dropout of the architecture.
        backbone_kwargs: extra keyword arguments for the architecture builder.
        optimizer: optimiser factory (``class_path``/``init_args`` in YAML).
        scheduler: LR scheduler factory, or None. ``ReduceLROnPlateau`` watches ``val/loss``.
        scheduler_interval: ``epoch`` or ``step``: when the scheduler steps.
        label_smoothing: cross-entropy label smoothing.
        channels_last: keep weights and activations channels-last (NHWC), which oneDNN convolutions
            run faster on CPUs, bf16 especially.
        backbone_lr_scale: learning-rate factor for everything but the classifier (fine-tuning a
            pretrained backbone gently while the fresh head learns fast).
        freeze_backbone_epochs: train only the classifier for this many epochs, then everything.
        normalize: ``(mean, std)`` applied to the [0, 1] input inside the model, so every checkpoint carries
            its own input normalisation; ``None`` keeps the seed's plain [0, 1] input.
        tta_flip: in evaluation and prediction, average the logits of each face and its mirror image.
        tta_shift: in evaluation and prediction, also average in the face moved this many pixels up, down, left
            and right (with ``tta_flip``: 10 views a face, 5× the work of ``tta_flip`` alone).
        tta_crop: in evaluation and prediction, average the centre and four corner crops of this side instead of
            the whole face (with ``tta_flip``: ten crops); for networks trained on crops (``data.augment.crop``)
            that take any input side (``vgg``, timm backbones; not the seed's CNN).
        mixup_alpha: mixup (Zhang et al. 2018) of training batches with Beta(α, α) weights; 0: off.
        cutmix_alpha: CutMix (Yun et al. 2019) of training batches with Beta(α, α) areas; 0: off. With both on,
            each mixed batch uses one of the two, picked at random.
        mix_prob: share of training batches mixed (when mixup or CutMix is on); the rest train on plain labels.
            Soft targets (``data.teacher``) are mixed in the same proportions as the faces; the teachers saw the
            faces before mixing, in ``teacher_mode: consistent`` too.
        calibrate: fit a softmax temperature on the validation logits after every validation epoch; it is
            stored in the checkpoints and applied by ``probabilities`` (prediction, the API, exports).
        init_from: a checkpoint of the same architecture and emotions whose network weights ``fit`` starts
            from (fine-tuning, e.g. the shipped ``fer/weights/fer2013_vgg.ckpt``); optimiser, schedule and
            epoch count start afresh. ``--ckpt_path`` resumes a run instead.
    """

    def __init__(
        self,
        backbone: str = "baseline",
        emotions: list[str] = list(EMOTIONS),  # noqa: B006 (never mutated; jsonargparse shows it)
        image_size: int = 48,
        in_chans: int = 1,
        drop_rate: float = 0.4,
        backbone_kwargs: dict | None = None,
        optimizer: OptimizerCallable = torch.optim.Adam,
        scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: str = "epoch",
        label_smoothing: float = 0.0,
        channels_last: bool = True,
        backbone_lr_scale: float = 1.0,
        freeze_backbone_epochs: int = 0,
        normalize: tuple[float, float] | None = None,
        tta_flip: bool = False,
        tta_shift: int = 0,
        tta_crop: int = 0,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        mix_prob: float = 1.0,
        calibrate: bool = True,
        init_from: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if tta_crop and (tta_shift or not 0 < tta_crop < image_size):
            raise ConfigError(f"model.tta_crop: expected a side below model.image_size ({image_size}) and "
                              f"model.tta_shift 0, got tta_crop {tta_crop} with tta_shift {tta_shift}")
        self.emotions = check_emotions(emotions)
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.net = create_model(
            backbone, in_chans=in_chans, num_classes=len(self.emotions), drop_rate=drop_rate,
            image_size=image_size, **(backbone_kwargs or {}),
        )
        if tta_crop:
            _check_takes_side(self.net, backbone, in_chans, tta_crop, "model.tta_crop")
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.metrics = torch.nn.ModuleDict(
            {f"{stage}_": _stage_metrics(len(self.emotions), with_confusion=stage != "train") for stage in STAGES}
        )
        self.val_acc_best = MaxMetric()
        self.calibration = torch.nn.ModuleDict(
            {name: MulticlassCalibrationError(len(self.emotions), n_bins=15) for name in ("raw", "scaled")}
        )
        mixers = [mix(alpha=alpha, num_classes=len(self.emotions))
                  for mix, alpha in ((v2.MixUp, mixup_alpha), (v2.CutMix, cutmix_alpha)) if alpha > 0]
        self.batch_mix = v2.RandomChoice(mixers) if mixers else None
        self.temperature = 1.0
        self._val_logits: list[torch.Tensor] = []
        self._val_labels: list[torch.Tensor] = []

    def _body_and_head(self) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
        head = list(self.net.get_classifier().parameters()) if hasattr(self.net, "get_classifier") else []
        head_ids = {id(p) for p in head}
        return [p for p in self.net.parameters() if id(p) not in head_ids], head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of (N, in_chans, S, S) faces scaled to [0, 1]."""
        x = normalize_input(x, self.hparams.normalize)
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.training:
            return self.net(x)
        return net_logits(self.net, x, self.hparams.tta_flip, self.hparams.tta_shift, self.hparams.tta_crop)

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """Calibrated per-emotion probabilities (float32) of faces scaled to [0, 1]."""
        return (self(x).float() / self.temperature).softmax(-1)

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        x, target = batch
        soft = target.ndim == 2  # soft labels (data.teacher): training accuracy counts their largest share
        y = target.argmax(-1) if soft else target
        if stage == "train" and self.batch_mix is not None and torch.rand(()) < self.hparams.mix_prob:
            x, target = self.batch_mix(x, target)  # the mixed one-hot labels, or the mixed soft targets
            y = target.argmax(-1)
        logits = self(x)
        loss = F.cross_entropy(logits, target, label_smoothing=self.hparams.label_smoothing)
        self.metrics[f"{stage}_"].update(logits.detach().float(), y)
        if stage == "val":
            self._val_logits.append(logits.detach().float())
            self._val_labels.append(y)
        if stage == "test":
            self.calibration["raw"].update(logits.float().softmax(-1), y)
            self.calibration["scaled"].update((logits.float() / self.temperature).softmax(-1), y)
        self.log(f"{stage}/loss", loss, on_step=stage == "train", on_epoch=True, prog_bar=True, batch_size=len(y))
        return loss

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss = self._step(batch, "train")
        if not torch.isfinite(loss):
            saved = [p for cb in self.trainer.checkpoint_callbacks
                     for p in (cb.last_model_path, cb.best_model_path) if p]
            checkpoint = max(saved, key=os.path.getmtime) if saved else "none written yet"
            raise FloatingPointError(
                f"Training loss is {loss.item()} at epoch {self.current_epoch}, step {self.global_step}: stopping. "
                f"Last good checkpoint: {checkpoint}. Try a lower learning rate or fp32 precision."
            )
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "test")

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self.probabilities(batch[0])

    def setup(self, stage: str) -> None:
        # Here, not in __init__: loading a trained checkpoint later must not need the file it started from.
        # A resumed run's own weights are restored after this.
        if stage == "fit" and self.hparams.init_from:
            self.load_network_weights(self.hparams.init_from)
        # The data module does not know the network: the two meet only here.
        crop = getattr(getattr(self.trainer.datamodule, "augment", None), "crop", None)
        if stage == "fit" and crop:
            _check_takes_side(self.net, self.hparams.backbone, self.hparams.in_chans, crop, "data.augment.crop")

    def load_network_weights(self, path: str | Path) -> None:
        """Copy the network weights of checkpoint ``path`` (same architecture) into this model; when its emotions
        differ from this model's (a 7-class FER2013 model starting an 8-class FER+ one), all but the classifier,
        which starts fresh."""
        checkpoint = torch.load(check_checkpoint(path), map_location="cpu", weights_only=False)
        theirs = list(checkpoint.get("hyper_parameters", {}).get("emotions", EMOTIONS))
        state = network_state(checkpoint)
        if theirs != self.emotions:
            classifier = {id(p) for p in self.net.get_classifier().parameters()}
            fresh = {name for name, p in self.net.named_parameters() if id(p) in classifier}
            state = {**state, **{name: p.detach().clone() for name, p in self.net.named_parameters() if name in fresh}}
            log.info("model.init_from %s: its emotions %s differ from %s; its classifier is left out", path, theirs,
                     self.emotions)
        try:
            self.net.load_state_dict(state)
        except RuntimeError as e:
            detail = " ".join(str(e).split())[:300]
            raise ConfigError(f"model.init_from {path}: its weights do not fit backbone {self.hparams.backbone!r} "
                              f"({detail})") from None

    def _shipped_members(self) -> list[tuple[str, dict]]:
        """(state-dict prefix, spec) of each ensemble member that is a shipped model (fer.runs.shipped_reference)."""
        members = (self.hparams.backbone_kwargs or {}).get("members", []) if self.hparams.backbone == "ensemble" else []
        return [(f"net.members.{i}.", spec) for i, spec in enumerate(members) if spec.get("shipped_file")]

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["temperature"] = self.temperature
        if self.val_acc_best.update_called:  # so a resumed run's hp/val_acc_best remembers the epochs before
            checkpoint["val_acc_best"] = float(self.val_acc_best.compute())
        for prefix, spec in self._shipped_members():
            # Left out when equal to the shipped file's weights, which loading puts back; changed, they are kept.
            ours = network_state(checkpoint, prefix)
            shipped = shipped_network_state(spec)
            if ours.keys() == shipped.keys() and all(torch.equal(v.float(), shipped[k].float())
                                                     for k, v in ours.items()):
                for key in ours:
                    del checkpoint["state_dict"][prefix + key]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.temperature = checkpoint.get("temperature", 1.0)
        for prefix, spec in self._shipped_members():
            if not any(key.startswith(prefix) for key in checkpoint["state_dict"]):
                checkpoint["state_dict"].update({prefix + k: v for k, v in shipped_network_state(spec).items()})
        if self._trainer is not None and self.trainer.state.fn == "fit" and self._schedule_takes_run_length():
            # Resumed with another budget (more epochs): the schedule stretches to the run's new length.
            for state in checkpoint.get("lr_schedulers", []):
                state["total_steps"] = int(self.trainer.estimated_stepping_batches)
        if "val_acc_best" in checkpoint:
            self.val_acc_best.reset()
            self.val_acc_best.update(torch.tensor(checkpoint["val_acc_best"]))

    def _log_epoch(self, stage: str) -> dict[str, torch.Tensor]:
        values = self.metrics[f"{stage}_"].compute()
        self.metrics[f"{stage}_"].reset()
        self.log(f"{stage}/acc", values["acc"], prog_bar=True)
        self.log(f"{stage}/f1", values["f1"])
        for emotion, recall in zip(self.emotions, values["recall"]):
            self.log(f"{stage}/recall/{emotion}", recall)
        return values

    def on_fit_start(self) -> None:
        if self.logger is not None:
            # Declares the metrics the TensorBoard hparams tab shows next to each run's settings, and the precision
            # the run trained in (the config may say only ``auto``).
            self.logger.log_hyperparams({**self.hparams, "precision": self.trainer.precision},
                                        {"hp/val_acc_best": 0.0, "hp/val_f1": 0.0})

    def on_train_epoch_start(self) -> None:
        if self.hparams.freeze_backbone_epochs:
            frozen = self.current_epoch < self.hparams.freeze_backbone_epochs
            for p in self._body_and_head()[0]:
                p.requires_grad_(not frozen)

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        values = self._log_epoch("val")
        logits, labels = self._val_logits, self._val_labels
        self._val_logits, self._val_labels = [], []
        if self.trainer.sanity_checking:
            return
        if logits:
            logits, labels = torch.cat(logits), torch.cat(labels)
            # which faces this rank got right, in the validation loader's order: runs compared face by face
            self.last_val_correct = (logits.argmax(-1) == labels).cpu()
            if self.hparams.calibrate and self.trainer.state.fn == "fit":  # a checkpoint's temperature is its run's
                if self.trainer.world_size > 1:  # every rank fits the same temperature, on all ranks' logits
                    logits, labels = self.all_gather(logits).flatten(0, 1), self.all_gather(labels).flatten()
                self.temperature = fit_temperature(logits, labels)
                self.log("val/temperature", self.temperature)
        self.last_val_confusion = values["confusion"].cpu()
        self.val_acc_best.update(values["acc"])
        self.log("hp/val_acc_best", self.val_acc_best.compute())
        self.log("hp/val_f1", values["f1"])
        experiment = getattr(self.logger, "experiment", None)
        if hasattr(experiment, "add_figure") and self.trainer.is_global_zero:
            fig = confusion_figure(values["confusion"], self.emotions, f"validation, epoch {self.current_epoch}")
            experiment.add_figure("val/confusion_matrix", fig, self.global_step)
            plt.close(fig)

    def on_test_epoch_end(self) -> None:
        values = self._log_epoch("test")
        self.last_test_confusion = values["confusion"].cpu()
        ece = {name: metric.compute().item() for name, metric in self.calibration.items()}
        for metric in self.calibration.values():
            metric.reset()
        self.log("test/ece_uncalibrated", ece["raw"])
        self.log("test/ece", ece["scaled"])
        log_dir = self.trainer.log_dir
        if self.logger is None or log_dir is None or not self.trainer.is_global_zero:
            return  # without a logger there is no run folder to write into
        write_confusion(values["confusion"], self.emotions, Path(log_dir), "test_confusion_matrix")
        summary = {
            "accuracy": values["acc"].item(),
            "macro_f1": values["f1"].item(),
            "per_class_recall": dict(zip(self.emotions, values["recall"].tolist())),
            "ece_uncalibrated": ece["raw"],
            "ece": ece["scaled"],
            "temperature": self.temperature,
            "samples": int(values["confusion"].sum()),
        }
        (Path(log_dir) / "test_metrics.json").write_text(json.dumps(summary, indent=2))

    def _schedule_takes_run_length(self) -> bool:
        """OneCycleLR-style schedules left without ``total_steps`` get the run's length from the trainer, so
        configs hold no step counts."""
        return getattr(self.scheduler_factory, "keywords", {}).get("total_steps", 0) is None

    def configure_optimizers(self):
        body, head = self._body_and_head()
        scale = self.hparams.backbone_lr_scale
        if scale != 1.0 and head:
            optimizer = self.optimizer_factory([{"params": body}, {"params": head}])
            optimizer.param_groups[0]["lr"] *= scale
        else:
            optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        kwargs = {}
        if self._schedule_takes_run_length():
            kwargs["total_steps"] = int(self.trainer.estimated_stepping_batches)
        scheduler = self.scheduler_factory(optimizer, **kwargs)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": self.hparams.scheduler_interval,
                             "monitor": "val/loss"},
        }
