"""Command line: ``python -m fer {fit,validate,test,predict} --config configs/….yaml`` (LightningCLI), plus
``convert-csv``, ``bench``, ``ablate``, ``detect``, ``export``, ``stream`` and ``serve``."""

from __future__ import annotations

import argparse
import difflib
import errno
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

import lightning as L
from jsonargparse import Namespace

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from fer.ablate import ablate
from fer.bench import bench_command
from fer.data import FERDataModule
from fer.data.reading import convert_csv
from fer.detect import detect_command
from fer.errors import FERError
from fer.export import export_command
from fer.malloc import keep_freed_memory
from fer.runs import check_checkpoint, check_writable, latest_run
from fer.serve import serve_command
from fer.stream import stream_command
from fer.training import EmotionClassifier, RNGStates, Trainer


class FERArgumentParser(LightningArgumentParser):
    """Argument errors in one paragraph (no usage dump): the message, the closest accepted options, and where
    to see them all."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:  # jsonargparse parsing internally: it catches and goes on
            super().error(message, ex)
        parser = getattr(ex, "subcommand_parser", None) or self
        accepted = [option[2:] for action in parser._actions for option in action.option_strings if option[:2] == "--"]
        hints = []
        for bad in re.findall(r"(?:option|key) ['\"]([\w.]+)['\"]|--([\w.]+)", message):
            bad = bad[0] or bad[1]
            if bad in accepted:
                continue
            close = difflib.get_close_matches(bad, [o for o in accepted if "." in o], n=3, cutoff=0.6)
            siblings = sorted({o.rsplit(".", 1)[-1] for o in accepted if o.rsplit(".", 1)[0] == bad.rsplit(".", 1)[0]})
            if close:
                hints.append(f"Did you mean {' or '.join(close)}?")
            elif siblings and "." in bad:
                hints.append(f"{bad.rsplit('.', 1)[0]} accepts: {', '.join(siblings)}.")
        command = parser.prog.replace(" [options]", "").replace("__main__.py", "python -m fer")
        message = " ".join(message.split()).rstrip(".")  # jsonargparse's message, on one line
        sys.stderr.write(f"fer: config error: {message}." + (" " + " ".join(hints) if hints else "")
                         + f" All options: {command} --help\n")
        self.exit(2)


class FERCLI(LightningCLI):
    """LightningCLI with the project's parser, links and ``Trainer`` (``precision: auto`` by default)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, parser_class=FERArgumentParser, trainer_class=Trainer, **kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        # One source of truth each: the data decides the classes, the model its input size.
        parser.link_arguments("data.emotions", "model.emotions")
        parser.link_arguments("model.image_size", "data.image_size")

    def instantiate_trainer(self, **kwargs) -> L.Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        # Every run, whatever callbacks its config lists: a resumed run must not replay the seed's random stream.
        trainer.callbacks.append(RNGStates())
        return trainer

    def before_instantiate_classes(self) -> None:
        """Check what a run depends on before it starts: the log folder can be written; ``--ckpt_path last``
        means the newest run's ``last.ckpt`` and logging on in that run's folder (one TensorBoard curve); a
        checkpoint to load is whole."""
        if self.subcommand is None:
            return
        config = self.config[self.subcommand]
        logger = config.trainer.logger
        logger_args = getattr(logger, "init_args", None) if isinstance(logger, Namespace) else None
        save_dir = getattr(logger_args, "save_dir", None)
        if self.subcommand == "fit":
            check_writable(save_dir or config.trainer.default_root_dir or ".")
        if config.ckpt_path == "last" and save_dir is not None and getattr(logger_args, "name", None):
            logger_args.version, path = latest_run(save_dir, logger_args.name)
            config.ckpt_path = str(path)
        if config.ckpt_path not in (None, "best", "last", "hpc", "registry"):
            check_checkpoint(config.ckpt_path)


def convert_csv_command(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="fer convert-csv", description="Write a Kaggle fer2013.csv as a {train,validation,test}/<emotion>/*.png tree."
    )
    parser.add_argument("csv", type=Path, help="fer2013.csv with columns emotion,pixels,Usage")
    parser.add_argument("out_dir", type=Path, help="folder to write the tree into, e.g. data/fer2013")
    args = parser.parse_args(argv)
    counts = convert_csv(args.csv, args.out_dir)
    print(", ".join(f"{split}: {n} images" for split, n in counts.items()), f"written under {args.out_dir}")


COMMANDS: dict[str, Callable[[Sequence[str]], object]] = {
    "convert-csv": convert_csv_command,
    "bench": bench_command,
    "ablate": ablate,
    "detect": detect_command,
    "export": export_command,
    "stream": stream_command,
    "serve": serve_command,
}


def main(args: Sequence[str] | None = None) -> object:
    """Entry point of ``python -m fer`` and the ``fer`` script; ``args`` replaces ``sys.argv[1:]`` (for tests).

    Returns the LightningCLI object, or what an extra command returns (its results or the file it wrote)."""
    argv = list(sys.argv[1:] if args is None else args)
    keep_freed_memory()
    try:
        if argv and argv[0] in COMMANDS:
            return COMMANDS[argv[0]](argv[1:])
        return FERCLI(
            EmotionClassifier,
            FERDataModule,
            args=args,
            seed_everything_default=42,
            auto_configure_optimizers=False,
            save_config_kwargs={"overwrite": True},
        )
    except FERError as e:
        sys.exit(f"fer: {e.kind}: {e}")
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS):
            raise
        sys.exit(f"fer: run error: cannot write {e.filename or 'a file'} ({e.strerror}). Checkpoints are written to "
                 "a temporary file and renamed, so the last one saved is whole: free space and resume with "
                 "--ckpt_path last")
