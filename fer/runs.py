"""Run folders and checkpoints: finding the run to resume, checking a checkpoint is whole, checking a log
folder can be written — before hours of training depend on them; the network weights a checkpoint holds, or a
shipped model's file, which an ensemble refers to rather than copying."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import zipfile
from pathlib import Path

import torch

from fer.errors import RunError

# The models that ship inside the package (``fer.api.SHIPPED_MODELS`` names them).
SHIPPED_WEIGHTS = Path(__file__).parent / "weights"


def checkpoint_problem(path: Path) -> str | None:
    """Why ``path`` is not a whole checkpoint (PyTorch's zip format, every member's CRC checked), or None."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        return f"truncated or corrupt ({e})"
    return f"corrupt member {bad}" if bad else None


def check_checkpoint(path: str | Path) -> Path:
    """``path`` if it is a whole checkpoint; else a ``RunError`` that names the newest good one beside it."""
    path = Path(path)
    if not path.is_file():
        raise RunError(f"checkpoint {path}: no such file")
    problem = checkpoint_problem(path)
    if problem is None:
        return path
    others = sorted((p for p in path.parent.glob("*.ckpt") if p != path), key=lambda p: p.stat().st_mtime, reverse=True)
    good = next((p for p in others if checkpoint_problem(p) is None), None)
    advice = f"The newest good checkpoint there is {good}: resume with --ckpt_path {good}" if good else \
        "There is no good checkpoint beside it: start the run again without --ckpt_path"
    raise RunError(f"checkpoint {path} is {problem}. {advice}")


def latest_run(save_dir: str | Path, name: str) -> tuple[int, Path]:
    """The newest ``<save_dir>/<name>/version_N`` that has a ``checkpoints/last.ckpt``: (N, that file)."""
    runs = []
    for folder in Path(save_dir, name).glob("version_*"):
        match = re.fullmatch(r"version_(\d+)", folder.name)
        if match and (folder / "checkpoints" / "last.ckpt").exists():
            runs.append((int(match[1]), folder / "checkpoints" / "last.ckpt"))
    if not runs:
        raise RunError(
            f"--ckpt_path last: no {Path(save_dir, name)}/version_*/checkpoints/last.ckpt to resume from "
            "(the logger's save_dir and name decide where runs go); start without --ckpt_path"
        )
    return max(runs)


def check_writable(folder: str | Path) -> None:
    """Create ``folder`` and write a file into it, or raise a ``RunError`` saying why not."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".fer-write-check-"):
            pass
    except OSError as e:
        raise RunError(
            f"cannot write to the log folder {folder} ({e.strerror or e}): choose another with "
            "--trainer.default_root_dir / --trainer.logger.init_args.save_dir, or free the disk"
        ) from e
    if not os.access(folder, os.W_OK):
        raise RunError(f"the log folder {folder} is not writable")


def network_state(checkpoint: dict, prefix: str = "net.") -> dict[str, torch.Tensor]:
    """The network's weights in a loaded checkpoint: its ``prefix`` entries (an ensemble member's:
    ``net.members.<i>.``), without that prefix."""
    return {k.removeprefix(prefix): v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def is_shipped(path: str | Path) -> bool:
    """Whether ``path`` is one of the shipped models' files."""
    return Path(path).resolve().parent == SHIPPED_WEIGHTS.resolve()


def shipped_reference(path: str | Path) -> dict[str, str]:
    """``{"shipped_file": name, "sha256": digest}`` when ``path`` is one of the shipped models' files, else ``{}``:
    what an ensemble member records so that saving the ensemble refers to the file instead of copying it."""
    return {"shipped_file": Path(path).name, "sha256": file_sha256(path)} if is_shipped(path) else {}


def shipped_network_state(reference: dict[str, str]) -> dict[str, torch.Tensor]:
    """The network weights of the shipped file an ensemble member refers to (``shipped_reference``), once its
    sha256 says it is the file the ensemble was built with."""
    path = SHIPPED_WEIGHTS / reference["shipped_file"]
    rebuild = "rebuild the ensemble from the models installed (python -m fer export --format checkpoint --ckpt …)"
    if not path.is_file():
        raise RunError(f"an ensemble member refers to the shipped model {path}, which is not installed: {rebuild}")
    if file_sha256(path) != reference["sha256"]:
        raise RunError(f"an ensemble member refers to the shipped model {path}, but that file is not the one the "
                       f"ensemble was built with (its sha256 differs; another fer version?): {rebuild}")
    return network_state(torch.load(path, map_location="cpu", weights_only=False))
