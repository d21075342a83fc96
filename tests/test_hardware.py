"""The precision chosen from the hardware, with the hardware queries mocked (no GPU is reachable here)."""

import pytest
import torch

from fer import hardware
from fer.cli import main
from fer.training import Trainer


@pytest.fixture
def machine(monkeypatch):
    """Set what the hardware queries answer: ``machine(cuda=..., cuda_bf16=..., cpu_bf16=..., mps=...)``."""

    def set_machine(cuda=False, cuda_bf16=False, cpu_bf16=False, mps=False):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: cuda_bf16)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Mock GPU")
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
        monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: cpu_bf16)

    return set_machine


@pytest.mark.parametrize(("kind", "accelerator", "expected"), [
    ({"cuda": True, "cuda_bf16": True}, "auto", "bf16-mixed"),
    ({"cuda": True, "cuda_bf16": True}, "gpu", "bf16-mixed"),
    ({"cuda": True, "cuda_bf16": False}, "auto", "16-mixed"),
    ({"cuda": True, "cuda_bf16": False}, "cuda", "16-mixed"),
    ({"cuda": True, "cuda_bf16": True, "cpu_bf16": False}, "cpu", "32-true"),  # asked for the CPU: the CPU decides
    ({"cpu_bf16": True}, "auto", "bf16-mixed"),
    ({"cpu_bf16": False}, "auto", "32-true"),
    ({"cpu_bf16": True, "mps": True}, "auto", "32-true"),
])
def test_precision_is_chosen_from_the_hardware(machine, kind, accelerator, expected):
    machine(**kind)
    precision, reason = hardware.choose_precision(accelerator)
    assert precision == expected
    assert reason  # says why


def test_auto_picks_the_gpu_path_on_a_cuda_machine_and_says_why(machine, monkeypatch):
    machine(cuda=True, cuda_bf16=True)
    logged = []
    monkeypatch.setattr(hardware, "rank_zero_info", logged.append)
    assert hardware.resolve_precision("auto", "auto") == "bf16-mixed"
    assert logged == ["precision: auto chose bf16-mixed: CUDA GPU Mock GPU supports bf16"]


def test_explicit_bf16_on_a_cpu_without_it_runs_with_a_warning(machine):
    machine(cpu_bf16=False)
    with pytest.warns(UserWarning, match="no native bf16.*slower than 32-true"):
        assert hardware.resolve_precision("bf16-mixed", "cpu") == "bf16-mixed"


def test_explicit_precision_is_kept_without_a_warning_where_it_is_native(machine, recwarn):
    machine(cpu_bf16=True)
    assert hardware.resolve_precision("bf16-mixed", "cpu") == "bf16-mixed"
    assert hardware.resolve_precision("32-true", "cpu") == "32-true"
    assert not [w for w in recwarn if "bf16" in str(w.message)]


def test_the_trainer_resolves_auto(machine):
    machine(cpu_bf16=False)
    assert Trainer(logger=False, accelerator="cpu").precision == "32-true"
    machine(cpu_bf16=True)
    assert Trainer(logger=False, accelerator="cpu").precision == "bf16-mixed"
    assert Trainer(logger=False, accelerator="cpu", precision="32-true").precision == "32-true"


def test_the_cli_refuses_an_unknown_precision_listing_auto(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--config", "configs/quickstart.yaml", "--trainer.precision", "bf17"])
    err = capsys.readouterr().err
    assert err.startswith("fer: config error:") and "trainer.precision" in err
    assert "auto" in err and "bf16-mixed" in err  # the accepted values
