from functools import partial

import lightning as L
import pytest
import torch

from fer.data import Augmentation, FERDataModule
from fer.errors import ConfigError
from fer.training import EmotionClassifier


class _Snapshots(L.Callback):
    def __init__(self) -> None:
        self.body = []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.body.append(pl_module.net.model.conv1.weight.detach().clone())


def test_backbone_frozen_first_then_trained_at_a_lower_rate(tiny_tree, tmp_path):
    torch.manual_seed(0)
    model = EmotionClassifier(backbone="resnet18", backbone_lr_scale=0.1, freeze_backbone_epochs=1,
                              optimizer=partial(torch.optim.Adam, lr=1e-3))
    start = model.net.model.conv1.weight.detach().clone()
    head_start = model.net.get_classifier().weight.detach().clone()
    snapshots = _Snapshots()
    trainer = L.Trainer(max_epochs=2, limit_train_batches=2, limit_val_batches=1, logger=False, accelerator="cpu",
                        enable_checkpointing=False, enable_progress_bar=False, callbacks=[snapshots],
                        default_root_dir=tmp_path)
    trainer.fit(model, FERDataModule(str(tiny_tree), batch_size=8, num_workers=0))
    assert [g["lr"] for g in trainer.optimizers[0].param_groups] == [1e-4, 1e-3]
    assert torch.equal(snapshots.body[0], start)  # epoch 0: backbone frozen
    assert not torch.equal(snapshots.body[1], start)  # epoch 1: trained
    assert not torch.equal(model.net.get_classifier().weight, head_start)


def test_non_finite_loss_stops_with_a_clear_message_and_keeps_the_checkpoint(tiny_tree, tmp_path):
    class Poison(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module) -> None:
            if trainer.current_epoch == 1:
                with torch.no_grad():
                    pl_module.net.head[-1].bias.fill_(float("nan"))

    model = EmotionClassifier()
    trainer = L.Trainer(max_epochs=3, limit_train_batches=2, limit_val_batches=1, logger=False, accelerator="cpu",
                        enable_progress_bar=False, callbacks=[Poison(), L.pytorch.callbacks.ModelCheckpoint(
                            dirpath=tmp_path, save_last=True)], default_root_dir=tmp_path)
    expected = r"Training loss is nan at epoch 1.*Last good checkpoint: .*last\.ckpt"
    with pytest.raises(FloatingPointError, match=expected):
        trainer.fit(model, FERDataModule(str(tiny_tree), batch_size=8, num_workers=0))
    saved = torch.load(tmp_path / "last.ckpt", weights_only=False)
    assert saved["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values() if v.is_floating_point())


def _fit(tiny_tree, tmp_path, callbacks=(), epochs: int = 2, **model_kwargs) -> tuple[L.Trainer, EmotionClassifier]:
    torch.manual_seed(0)
    model = EmotionClassifier(backbone="vgg_half", drop_rate=0.1, **model_kwargs)
    trainer = L.Trainer(max_epochs=epochs, limit_train_batches=3, limit_val_batches=2, logger=False,
                        accelerator="cpu", enable_progress_bar=False, callbacks=list(callbacks),
                        default_root_dir=tmp_path)
    trainer.fit(model, FERDataModule(str(tiny_tree), batch_size=16, num_workers=0))
    return trainer, model


def test_ema_stands_in_for_the_model_only_once_averaging_has_started(tiny_tree, tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    from fer.training import EMAWeights

    ema = EMAWeights(decay=0.5, update_starting_at_step=3)  # zero-based; 3 steps an epoch: from the 2nd epoch on
    checkpoints = ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, filename="{epoch}")
    _, model = _fit(tiny_tree, tmp_path, [ema, checkpoints])
    first, second = (torch.load(tmp_path / f"epoch={i}.ckpt", weights_only=False) for i in (0, 1))
    assert "current_model_state" not in first  # not started: the model's own weights, not the initialisation
    assert int(ema._average_model.n_averaged) == 3  # the second epoch's steps
    key = "net.features.0.0.weight"
    assert not torch.equal(second["state_dict"][key], second["current_model_state"][key])
    assert torch.equal(model.state_dict()[key], second["state_dict"][key])  # training ends on the average


def test_epoch_swa_validates_and_saves_the_average_of_the_epoch_ends_so_far(tiny_tree, tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    from fer.training import EpochSWA

    class Spy(L.Callback):  # listed after EpochSWA: sees the weights it swaps in for validation
        def __init__(self) -> None:
            self.ends, self.validated = [], []

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            self.ends.append(pl_module.net.features[0][0].weight.detach().clone())

        def on_validation_epoch_start(self, trainer, pl_module) -> None:
            if not trainer.sanity_checking:
                self.validated.append(pl_module.net.features[0][0].weight.detach().clone())

    spy = Spy()
    checkpoints = ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, filename="{epoch}")
    _, model = _fit(tiny_tree, tmp_path, [EpochSWA(), spy, checkpoints], epochs=3)
    key = "net.features.0.0.weight"
    saved = [torch.load(tmp_path / f"epoch={i}.ckpt", weights_only=False)["state_dict"][key] for i in range(3)]
    for epoch in range(3):  # validated, saved: the mean of the epoch ends so far, this epoch's included
        mean = torch.stack(spy.ends[:epoch + 1]).mean(0)
        assert torch.allclose(spy.validated[epoch], mean, atol=1e-6)
        assert torch.allclose(saved[epoch], mean, atol=1e-6)
    assert not torch.equal(saved[2], spy.ends[2])
    assert torch.equal(model.state_dict()[key], saved[2])  # training ends on the average


def test_temperature_is_fitted_on_validation_stored_and_applied(tiny_tree, tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    from fer.training.module import fit_temperature

    logits = torch.randn(2000, 7) * 4
    labels = torch.distributions.Categorical(logits=logits / 2).sample()  # the truth: logits are 2x too sharp
    assert abs(fit_temperature(logits, labels) - 2.0) < 0.2

    checkpoint = ModelCheckpoint(dirpath=tmp_path, filename="m")
    _, model = _fit(tiny_tree, tmp_path, [checkpoint], epochs=1)
    assert model.temperature != 1.0
    loaded = EmotionClassifier.load_from_checkpoint(tmp_path / "m.ckpt", weights_only=False)
    assert loaded.temperature == model.temperature
    x = torch.rand(4, 1, 48, 48)
    loaded.eval()
    expected = (loaded(x).float() / loaded.temperature).softmax(-1)
    assert torch.allclose(loaded.probabilities(x), expected)


def test_one_cycle_schedule_gets_the_run_length_from_the_trainer(tiny_tree, tmp_path):
    scheduler = partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=0.01, total_steps=None)
    trainer, _ = _fit(tiny_tree, tmp_path, scheduler=scheduler, scheduler_interval="step",
                      optimizer=partial(torch.optim.AdamW, lr=0.01))
    assert trainer.lr_scheduler_configs[0].scheduler.total_steps == 6  # 2 epochs of 3 batches


def test_flip_test_time_augmentation_averages_a_face_and_its_mirror():
    model = EmotionClassifier(backbone="vgg_half", tta_flip=True).eval()
    x = torch.rand(3, 1, 48, 48)
    with torch.no_grad():
        assert torch.allclose(model(x), model(x.flip(-1)), atol=1e-5)
        assert torch.allclose(model(x), (model.net(x) + model.net(x.flip(-1))) / 2, atol=1e-5)


def test_shifted_test_time_views_move_the_face_and_are_averaged():
    from fer.models.views import tta_views

    x = torch.arange(2 * 48 * 48, dtype=torch.float32).reshape(2, 1, 48, 48)
    views = tta_views(x, flip=False, shift=3)
    assert len(views) == 5 and len(tta_views(x, flip=True, shift=3)) == 10
    down, up, right, left = views[1:]  # where the face moves
    assert torch.equal(down[..., 3:, :], x[..., :-3, :])
    assert torch.equal(down[..., :3, :], x[..., :1, :].expand_as(down[..., :3, :]))  # the edge row repeated
    assert torch.equal(up[..., :-3, :], x[..., 3:, :])
    assert torch.equal(right[..., 3:], x[..., :-3]) and torch.equal(left[..., :-3], x[..., 3:])
    model = EmotionClassifier(backbone="vgg_half", tta_flip=True, tta_shift=3).eval()
    faces = torch.rand(3, 1, 48, 48)
    with torch.no_grad():
        expected = torch.stack([model.net(v) for v in tta_views(faces, flip=True, shift=3)]).mean(0)
        assert torch.allclose(model(faces), expected, atol=1e-5)


def test_crop_test_time_views_are_the_centre_and_corners_and_are_averaged():
    from fer.models.views import tta_views

    x = torch.rand(2, 1, 48, 48)
    views = tta_views(x, flip=False, shift=0, crop=40)
    assert len(views) == 5 and all(v.shape[-2:] == (40, 40) for v in views)
    crops = {(y, x0) for y in (0, 4, 8) for x0 in (0, 4, 8) if (y == 4) == (x0 == 4)}  # corners and centre
    assert all(any(torch.equal(v, x[..., y:y + 40, x0:x0 + 40]) for v in views) for y, x0 in crops)
    model = EmotionClassifier(backbone="vgg_half", tta_flip=True, tta_crop=40).eval()
    with torch.no_grad():
        expected = torch.stack([model.net(v) for v in tta_views(x, flip=True, shift=0, crop=40)]).mean(0)
        assert torch.allclose(model(x), expected, atol=1e-5)
    for bad in ({"tta_crop": 48}, {"tta_crop": 40, "tta_shift": 3}):
        with pytest.raises(ConfigError, match="model.tta_crop"):
            EmotionClassifier(backbone="vgg_half", **bad)
    with pytest.raises(ConfigError, match="model.tta_crop: backbone 'baseline' does not take 40-px crops"):
        EmotionClassifier(backbone="baseline", tta_crop=40)  # its dense head expects the 48-px feature map


def test_training_on_crops_refuses_the_seeds_cnn_before_the_first_step(tiny_tree, tmp_path):
    def trainer() -> L.Trainer:
        return L.Trainer(max_steps=1, limit_val_batches=0, logger=False, accelerator="cpu", enable_progress_bar=False,
                         enable_checkpointing=False, default_root_dir=tmp_path)

    data = FERDataModule(str(tiny_tree), batch_size=8, num_workers=0, augment=Augmentation(crop=40))
    refused = trainer()
    with pytest.raises(ConfigError, match="data.augment.crop: backbone 'baseline' does not take 40-px crops"):
        refused.fit(EmotionClassifier(backbone="baseline"), data)
    assert refused.global_step == 0
    vgg = trainer()
    vgg.fit(EmotionClassifier(backbone="vgg_half"), data)  # takes any side
    assert vgg.global_step == 1


class _MixSpy(L.Callback):
    def __init__(self) -> None:
        self.targets = []

    def on_train_start(self, trainer, pl_module) -> None:
        pl_module.batch_mix.register_forward_hook(lambda module, args, mixed: self.targets.append(mixed[1]))


@pytest.mark.parametrize(("kwargs", "mixed_batches"), [
    ({"mixup_alpha": 0.4, "cutmix_alpha": 1.0}, 6), ({"cutmix_alpha": 1.0, "mix_prob": 0.0}, 0)])
def test_mixup_and_cutmix_train_on_soft_labels(tiny_tree, tmp_path, kwargs, mixed_batches):
    spy = _MixSpy()
    trainer, _ = _fit(tiny_tree, tmp_path, callbacks=[spy], **kwargs)
    assert len(spy.targets) == mixed_batches  # 2 epochs of 3 batches
    for target in spy.targets:
        assert target.shape == (16, 7) and torch.allclose(target.sum(-1), torch.ones(16))
    assert any(((t > 0) & (t < 1)).any() for t in spy.targets) == bool(mixed_batches)
    assert torch.isfinite(trainer.callback_metrics["train/loss_epoch"])


def test_no_batch_mixing_unless_asked():
    assert EmotionClassifier(backbone="vgg_half").batch_mix is None


def test_temperature_fits_under_inference_mode_too():
    from fer.training.module import fit_temperature

    with torch.inference_mode():
        logits = torch.randn(500, 7) * 3
        labels = logits.argmax(-1)
        assert fit_temperature(logits, labels) < 1.0  # always right: sharpen


def test_init_from_starts_fit_from_a_checkpoints_weights_and_is_not_needed_afterwards(trained, tiny_tree, tmp_path):
    from fer import EmotionRecognizer
    from fer.errors import ConfigError
    from tests.conftest import SIX

    recognizer, _ = trained
    source = tmp_path / "source.ckpt"
    recognizer.save(str(source))
    hp = recognizer.module.hparams
    model = EmotionClassifier(backbone=hp.backbone, emotions=SIX, normalize=hp.normalize, init_from=str(source))
    assert not torch.equal(model.net.state_dict()["features.0.0.weight"],
                           recognizer.module.net.state_dict()["features.0.0.weight"])
    trainer = L.Trainer(max_steps=1, limit_val_batches=0, logger=False, accelerator="cpu", enable_checkpointing=False,
                        enable_progress_bar=False, default_root_dir=tmp_path)
    trainer.fit(model, FERDataModule(str(tiny_tree), emotions=SIX, batch_size=8, num_workers=0))
    # one Adam step of lr 1e-3 from the source weights, not from a fresh initialisation
    for name, theirs in recognizer.module.net.state_dict().items():
        if theirs.is_floating_point():
            assert (model.net.state_dict()[name] - theirs).abs().max() < 2e-3, name
    trainer.save_checkpoint(tmp_path / "fine_tuned.ckpt")
    source.unlink()
    EmotionRecognizer.load(str(tmp_path / "fine_tuned.ckpt"))  # without the file it started from

    recognizer.save(str(source))
    seven = EmotionClassifier(backbone=hp.backbone, init_from=str(source))  # its six emotions, and disgust
    seven.load_network_weights(source)
    mine, theirs = seven.net.state_dict(), recognizer.module.net.state_dict()
    head = {n for n, p in seven.net.named_parameters() if any(p is q for q in seven.net.get_classifier().parameters())}
    assert head and all(mine[n].shape[0] == 7 for n in head)  # the classifier starts fresh, for seven classes
    assert all(torch.equal(mine[n], theirs[n]) for n in mine if n not in head)  # everything else is copied
    with pytest.raises(ConfigError, match="source.ckpt: its weights do not fit backbone 'baseline_se'"):
        EmotionClassifier(backbone="baseline_se", emotions=SIX, init_from=str(source)).setup("fit")


def test_the_best_validation_accuracy_so_far_survives_a_resume():
    before, checkpoint = EmotionClassifier(), {}
    before.on_save_checkpoint(checkpoint)
    assert "val_acc_best" not in checkpoint  # nothing validated yet: nothing to remember
    before.val_acc_best.update(torch.tensor(0.8))
    before.on_save_checkpoint(checkpoint)
    after = EmotionClassifier()
    after.on_load_checkpoint(checkpoint)
    after.val_acc_best.update(torch.tensor(0.5))  # a worse epoch after the resume
    assert after.val_acc_best.compute().item() == pytest.approx(0.8)


def test_mixup_mixes_soft_targets_in_the_proportions_of_the_faces():
    model = EmotionClassifier(backbone="vgg_half", mixup_alpha=0.4)  # mix_prob 1: every batch is mixed
    inputs, targets = [], []
    model.net.register_forward_pre_hook(lambda module, args: inputs.append(args[0]))
    model.batch_mix.register_forward_hook(lambda module, args, mixed: targets.append(mixed[1]))
    faces = torch.stack([torch.full((1, 48, 48), 0.2), torch.full((1, 48, 48), 0.9)])
    soft = torch.tensor([[0.6, 0.4, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0.3, 0, 0.7]])  # a teacher's targets
    model.training_step((faces, soft), 0)
    share = (0.9 - inputs[0][0, 0, 0, 0]) / 0.7  # face 0's share in the first mixed face
    assert 0 < share < 1
    assert torch.allclose(targets[0][0], share * soft[0] + (1 - share) * soft[1], atol=1e-5)


def test_sam_applies_the_gradient_taken_at_the_perturbed_weights_to_the_original_ones():
    from fer.training import SAMAdamW

    def loss_fn(w: torch.Tensor) -> torch.Tensor:
        return (w ** 4).sum() + w.prod()

    w = torch.tensor([1.0, -2.0, 0.5], requires_grad=True)
    sam = SAMAdamW([w], rho=0.1, lr=0.05, weight_decay=0.0)
    reference = w.detach().clone().requires_grad_()  # plain AdamW, fed SAM's gradient by hand
    adamw = torch.optim.AdamW([reference], lr=0.05, weight_decay=0.0)
    plain = w.detach().clone().requires_grad_()  # plain AdamW on its own gradient
    plain_adamw = torch.optim.AdamW([plain], lr=0.05, weight_decay=0.0)
    seen = []

    def closure() -> torch.Tensor:
        seen.append(w.detach().clone())
        sam.zero_grad()
        loss = loss_fn(w)
        loss.backward()
        return loss

    for _ in range(3):
        start = w.detach().clone()
        assert torch.equal(sam.step(closure), loss_fn(start))  # the loss at the weights themselves
        g = torch.func.grad(loss_fn)(start)
        perturbed = start + 0.1 * g / g.norm()
        assert torch.allclose(seen[-1], perturbed)  # the second pass ran at the worst point within rho
        reference.grad = torch.func.grad(loss_fn)(perturbed)
        adamw.step()
        assert torch.allclose(w.detach(), reference.detach())
        plain.grad = torch.func.grad(loss_fn)(plain.detach())
        plain_adamw.step()
    assert not torch.allclose(w.detach(), plain.detach(), atol=1e-4)
    with pytest.raises(ValueError, match="closure"):
        sam.step()
    with pytest.raises(ConfigError, match="rho.*positive, got 0"):
        SAMAdamW([w], rho=0.0)
