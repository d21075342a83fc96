"""What this machine computes fast: the training precision, chosen from the hardware.

bf16 is a large speed-up where the hardware has it (CUDA GPUs from Ampere on; CPUs with AVX512-BF16 or AMX,
such as Xeons from Sapphire Rapids on and AMD from Zen 4 on) and a large slow-down where it is emulated (AVX2-only
CPUs: the seed's CNN trains about 20× slower in ``bf16-mixed`` than in ``32-true`` there). So the
precision is never fixed in a config: ``auto`` asks the hardware. (Channels-last needs no choosing: it was the
faster memory format on both kinds of CPU, in fp32 and bf16, so ``EmotionClassifier`` always uses it.)
"""

from __future__ import annotations

import os
import platform
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Literal

import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

# Lightning's precision names, plus ``auto``: what ``trainer.precision`` accepts.
Precision = Literal["auto", "32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true",
                    "transformer-engine", "transformer-engine-float16", "32", "16", "bf16", "64"] | Literal[32, 16, 64]
BF16_EMULATED_SLOWDOWN = "10-20x"  # bf16-mixed against 32-true, a training step on AVX2-only CPUs (docs/performance.md)


def cpu_capability() -> str:
    """The widest vector instruction set PyTorch's own CPU kernels use here: ``AVX512``, ``AVX2``, ``DEFAULT``…"""
    return torch.backends.cpu.get_cpu_capability()


def cpu_has_native_bf16() -> bool:
    """True where oneDNN runs bf16 in hardware (AVX512-BF16 or AMX on x86, BF16 on Arm); False where it would
    emulate it. oneDNN's check follows ``ONEDNN_MAX_CPU_ISA``, so an AVX2-capped run counts as AVX2-only."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


def _uses_cuda(accelerator: str) -> bool:
    return accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()


def choose_precision(accelerator: str = "auto") -> tuple[str, str]:
    """The fastest sound training precision for ``accelerator`` (Lightning's name: ``auto``, ``cpu``, ``gpu``,
    ``cuda``, ``mps``) on this machine, and why.

    CUDA GPU: ``bf16-mixed`` where it supports bf16, else ``16-mixed``. CPU with native bf16: ``bf16-mixed``.
    Anything else (AVX2-only CPUs, Apple's MPS): ``32-true``."""
    if _uses_cuda(accelerator):
        gpu = torch.cuda.get_device_name(0)
        if torch.cuda.is_bf16_supported():
            return "bf16-mixed", f"CUDA GPU {gpu} supports bf16"
        return "16-mixed", f"CUDA GPU {gpu} has no bf16"
    if accelerator in ("auto", "gpu", "mps") and torch.backends.mps.is_available():
        return "32-true", "Apple GPU (MPS): mixed precision is not worth it there"
    if cpu_has_native_bf16():
        return "bf16-mixed", f"CPU has native bf16 ({cpu_capability()}, oneDNN bf16 supported)"
    return "32-true", (f"CPU has no native bf16 ({cpu_capability()}): bf16 would be emulated, "
                       f"{BF16_EMULATED_SLOWDOWN} slower")


def resolve_precision(precision: str | int | None, accelerator: str = "auto") -> str | int:
    """``precision`` as Lightning takes it: ``auto`` (or None) becomes ``choose_precision``'s answer, logged
    with its reason; an explicit bf16 precision on a CPU that would emulate it is kept, with a warning."""
    if precision in (None, "auto"):
        chosen, reason = choose_precision(accelerator)
        rank_zero_info(f"precision: auto chose {chosen}: {reason}")
        return chosen
    if str(precision).startswith("bf16") and not _uses_cuda(accelerator) and not cpu_has_native_bf16():
        rank_zero_warn(f"precision {precision}: this CPU ({cpu_capability()}) has no native bf16, so it is emulated "
                       f"and trains about {BF16_EMULATED_SLOWDOWN} slower than 32-true; precision: auto chooses "
                       "for you")
    return precision


def cpu_autocast() -> AbstractContextManager:
    """bf16 autocast on a CPU with native bf16 (inference of teachers), nothing where bf16 would be emulated."""
    return torch.autocast("cpu", dtype=torch.bfloat16) if cpu_has_native_bf16() else nullcontext()


def machine_facts() -> dict[str, object]:
    """This machine as ``lscpu`` names it (CPU model name, family and model numbers), its cores, the vector
    instruction set PyTorch uses, native bf16 and any CUDA GPU: what a wall time or a speed is read against."""
    cpuinfo = Path("/proc/cpuinfo")
    fields: dict[str, str] = {}
    if cpuinfo.is_file():  # Linux; elsewhere the platform's processor string stands in for the model name
        for line in cpuinfo.read_text().split("\n\n")[0].splitlines():
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    return {
        "cpu": fields.get("model name") or platform.processor() or platform.machine(),
        "family": fields.get("cpu family"), "model": fields.get("model"),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "capability": cpu_capability(), "native_bf16": cpu_has_native_bf16(),
        "amx": "amx_bf16" in fields.get("flags", "").split(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def machine_label(facts: dict[str, object]) -> str:
    """One line for a table: ``AMD EPYC (family 25 model 17), 2 cores, AVX512, native bf16``."""
    numbers = f" (family {facts['family']} model {facts['model']})" if facts.get("family") else ""
    bf16 = "AMX" if facts.get("amx") else "native bf16" if facts.get("native_bf16") else "no native bf16"
    gpu = f", {facts['gpu']}" if facts.get("gpu") else ""
    return f"{facts['cpu']}{numbers}, {facts['cores']} cores, {facts['capability']}, {bf16}{gpu}"
