import pytest
import torch

from fer.models import MODELS, create_model
from fer.models.baseline import BaselineCNN


def test_baseline_matches_seed_parameter_count():
    model = BaselineCNN()
    assert sum(p.numel() for p in model.parameters()) == 6_329_351


def test_baseline_layers_follow_the_seed():
    model = BaselineCNN()
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [c.out_channels for c in convs] == [128, 256, 512, 512]
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) for c in convs)
    assert [lin.out_features for lin in linears] == [512, 256, 7]
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in model.modules()) == 4
    assert not any(isinstance(m, torch.nn.Softmax) for m in model.modules())  # softmax is in the loss


@pytest.mark.parametrize("name", sorted(set(MODELS) - {"ensemble"}))  # made of trained models: test_ensemble.py
@pytest.mark.parametrize("num_classes,image_size", [(7, 48), (6, 64)])
def test_registered_models_give_logits(name, num_classes, image_size):
    model = create_model(name, in_chans=1, num_classes=num_classes, drop_rate=0.1, image_size=image_size).eval()
    out = model(torch.rand(2, 1, image_size, image_size))
    assert out.shape == (2, num_classes)
    assert torch.isfinite(out).all()


def test_unknown_backbone_names_the_choices():
    with pytest.raises(ValueError, match="registered backbones: .*baseline"):
        create_model("resnet9000")
    with pytest.raises(ValueError, match="averages trained models: .*export --ckpt A.ckpt B.ckpt"):
        create_model("ensemble")


def test_baseline_rejects_sizes_the_pools_cannot_halve():
    with pytest.raises(ValueError, match="multiple of 16"):
        BaselineCNN(image_size=50)


@pytest.mark.parametrize("p", [0.1, 0.4])
def test_fast_dropout_drops_p_and_keeps_the_mean_and_layout(p):
    from fer.models.layers import Dropout

    x = torch.ones(8, 64, 24, 24).to(memory_format=torch.channels_last)
    torch.manual_seed(0)
    y = Dropout(p).train()(x)
    assert abs((y == 0).float().mean().item() - p) < 0.01
    assert abs(y.mean().item() - 1.0) < 0.02
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert not torch.equal(y, Dropout(p).train()(x))  # a fresh mask each call
    assert torch.equal(Dropout(p).eval()(x), x)


def test_fast_dropout_gradient_uses_the_same_mask():
    from fer.models.layers import Dropout

    x = torch.ones(4, 8, 6, 6, requires_grad=True)
    y = Dropout(0.5).train()(x)
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())


def test_timm_backbone_by_name_with_upsampling():
    model = create_model("resnet18", in_chans=1, num_classes=6, drop_rate=0.1, image_size=48, input_size=64).eval()
    seen = []
    model.model.conv1.register_forward_hook(lambda m, i, o: seen.append(i[0].shape))
    assert model(torch.rand(2, 1, 48, 48)).shape == (2, 6)
    assert seen == [(2, 1, 64, 64)]
    assert model.get_classifier().out_features == 6


def test_pretrained_weights_load_from_a_local_file(tmp_path):
    import timm

    source = timm.create_model("resnet18", num_classes=1000)  # stands in for downloaded ImageNet weights
    torch.nn.init.normal_(source.conv1.weight)
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    fresh = create_model("resnet18", in_chans=1, num_classes=7)
    loaded = create_model("resnet18", in_chans=1, num_classes=7, pretrained_path=str(path))
    # timm folds the RGB filters of the first layer into one channel, and keeps the rest as saved.
    assert torch.allclose(loaded.model.conv1.weight, source.conv1.weight.sum(1, keepdim=True))
    assert torch.equal(loaded.model.layer4[1].conv2.weight, source.layer4[1].conv2.weight)
    assert not torch.equal(fresh.model.layer4[1].conv2.weight, loaded.model.layer4[1].conv2.weight)
    assert loaded.get_classifier().out_features == 7


def test_missing_pretrained_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth is not a file"):
        create_model("resnet18", pretrained_path=str(tmp_path / "nope.pth"))


def test_offline_pretrained_fails_fast_with_advice():
    import os
    import subprocess
    import sys
    import time

    code = "from fer.models import create_model\ncreate_model('resnet18', pretrained=True)"
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode != 0
    assert "Could not fetch timm's pretrained weights for 'resnet18'" in done.stderr
    assert "pretrained_path" in done.stderr
    assert time.perf_counter() - start < 60


@pytest.mark.parametrize("name,input_size", [("convnext_atto", None), ("mobilenetv3_small_100", 96),
                                             ("vit_tiny_patch16_224", 64), ("efficientnet_b0", 64),
                                             ("mobilevit_xxs", 64)])
def test_timm_families_build_for_faces(name, input_size):
    model = create_model(name, in_chans=1, num_classes=7, drop_rate=0.1, image_size=48, input_size=input_size)
    assert model.eval()(torch.rand(2, 1, 48, 48)).shape == (2, 7)


def test_baseline_pools_before_its_activation_without_changing_the_result():
    model = BaselineCNN(drop_rate=0.0).eval()
    conv, pool, act, _ = model.features[0]
    assert isinstance(pool, torch.nn.MaxPool2d) and isinstance(act, torch.nn.LeakyReLU)
    x = torch.randn(4, 1, 48, 48)
    assert torch.equal(model.features[0](x), pool(act(conv(x))))  # the seed's order: activation, then pool


@pytest.mark.parametrize("name", ["baseline_se", "baseline_cbam"])
def test_attention_weighs_each_blocks_pooled_output(name):
    model = create_model(name, in_chans=1, num_classes=7, drop_rate=0.0, image_size=48).eval()
    seen = []
    for block in model.features:
        block[-2].register_forward_hook(lambda mod, inp, out: seen.append((type(mod).__name__, out.shape[-1])))
    model(torch.randn(2, 1, 48, 48))
    assert [size for _, size in seen] == [24, 12, 6, 3]
    assert all(kind in ("SEModule", "CbamModule") for kind, _ in seen)
