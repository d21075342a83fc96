"""Command line: ``python -m fer {fit,validate,test,predict} --config configs/….yaml`` (LightningCLI), plus
``convert-csv``, ``check-data``, ``bench``, ``ablate``, ``detect``, ``evaluate``, ``export``,
``select-ensemble``, ``stream`` and ``serve``."""

from __future__ import annotations

import argparse
import errno
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from fer.ablate import ablate
from fer.bench import bench_command
from fer.data import FERDataModule
from fer.data.quality import duplicates
from fer.data.reading import convert_csv
from fer.detect import detect_command
from fer.emotions import ALL_EMOTIONS
from fer.errors import FERError
from fer.evaluate import evaluate_command
from fer.export import export_command
from fer.select_ensemble import select_ensemble
from fer.serve import serve_command
from fer.stream import stream_command
from fer.training.lightning_cli import lightning_cli


def convert_csv_command(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="fer convert-csv",
        description="Write a Kaggle fer2013.csv as a {train,validation,test}/<emotion>/*.png tree.",
    )
    parser.add_argument("csv", type=Path, help="fer2013.csv with columns emotion,pixels,Usage")
    parser.add_argument("out_dir", type=Path, help="folder to write the tree into, e.g. data/fer2013")
    args = parser.parse_args(argv)
    counts = convert_csv(args.csv, args.out_dir)
    print(", ".join(f"{split}: {n} images" for split, n in counts.items()), f"written under {args.out_dir}")


def check_data_command(argv: Sequence[str]) -> dict:
    parser = argparse.ArgumentParser(
        prog="fer check-data", description="Exact-duplicate faces within and across the splits of a dataset."
    )
    parser.add_argument("data_dir", help="a dataset in any layout of docs/data.md")
    parser.add_argument("--image_size", type=int, default=48, help="side the faces are decoded at (default 48)")
    args = parser.parse_args(argv)
    dm = FERDataModule(args.data_dir, emotions=list(ALL_EMOTIONS), image_size=args.image_size, num_workers=0)
    tables = {s: t for s in ("train", "validation", "test") if (t := dm.load_split(s)) is not None}
    report = duplicates(tables)
    print(json.dumps(report, indent=2))
    return report


COMMANDS: dict[str, Callable[[Sequence[str]], object]] = {
    "convert-csv": convert_csv_command,
    "check-data": check_data_command,
    "bench": bench_command,
    "ablate": ablate,
    "detect": detect_command,
    "evaluate": evaluate_command,
    "export": export_command,
    "select-ensemble": select_ensemble,
    "stream": stream_command,
    "serve": serve_command,
}


def main(args: Sequence[str] | None = None) -> object:
    """Entry point of ``python -m fer`` and the ``fer`` script; ``args`` replaces ``sys.argv[1:]`` (for tests).

    Returns the LightningCLI object, or what an extra command returns (its results or the file it wrote)."""
    argv = list(sys.argv[1:] if args is None else args)
    try:
        if argv and argv[0] in COMMANDS:
            return COMMANDS[argv[0]](argv[1:])
        return lightning_cli(args)
    except FERError as e:
        sys.exit(f"fer: {e.kind}: {e}")
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS):
            raise
        sys.exit(f"fer: run error: cannot write {e.filename or 'a file'} ({e.strerror}). Checkpoints are written to "
                 "a temporary file and renamed, so the last one saved is whole: free space and resume with "
                 "--ckpt_path last")
