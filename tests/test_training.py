from functools import partial

import lightning as L
import torch

from fer.data import FERDataModule
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
    import pytest

    class Poison(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module) -> None:
            if trainer.current_epoch == 1:
                with torch.no_grad():
                    pl_module.net.head[-1].bias.fill_(float("nan"))

    model = EmotionClassifier()
    trainer = L.Trainer(max_epochs=3, limit_train_batches=2, limit_val_batches=1, logger=False, accelerator="cpu",
                        enable_progress_bar=False, callbacks=[Poison(), L.pytorch.callbacks.ModelCheckpoint(
                            dirpath=tmp_path, save_last=True)], default_root_dir=tmp_path)
    with pytest.raises(FloatingPointError, match=r"Training loss is nan at epoch 1.*Last good checkpoint: .*last\.ckpt"):
        trainer.fit(model, FERDataModule(str(tiny_tree), batch_size=8, num_workers=0))
    saved = torch.load(tmp_path / "last.ckpt", weights_only=False)
    assert saved["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values() if v.is_floating_point())
