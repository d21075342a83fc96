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


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("num_classes,image_size", [(7, 48), (6, 64)])
def test_registered_models_give_logits(name, num_classes, image_size):
    model = create_model(name, in_chans=1, num_classes=num_classes, drop_rate=0.1, image_size=image_size).eval()
    out = model(torch.rand(2, 1, image_size, image_size))
    assert out.shape == (2, num_classes)
    assert torch.isfinite(out).all()


def test_unknown_backbone_names_the_choices():
    with pytest.raises(ValueError, match="registered backbones: .*baseline"):
        create_model("resnet9000")


def test_baseline_rejects_sizes_the_pools_cannot_halve():
    with pytest.raises(ValueError, match="divisible by 16"):
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
