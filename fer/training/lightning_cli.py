"""Configs into runs: the project's LightningCLI, which ``python -m fer fit|validate|test|predict``, ``ablate`` and
``bench train`` build models, data and trainers with."""

from __future__ import annotations

import difflib
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from jsonargparse import Namespace
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from fer.data import FERDataModule
from fer.malloc import keep_freed_memory
from fer.runs import check_checkpoint, check_writable, latest_run
from fer.training.module import EmotionClassifier
from fer.training.trainer import Trainer

DEFAULT_LOG_NAME = "lightning_logs"  # TensorBoardLogger's, when a config names no run


class FERArgumentParser(LightningArgumentParser):
    """Argument errors in one paragraph (no usage dump): the message, the closest accepted options, and where
    to see them all. It reads jsonargparse's message text and argparse's option list, hence the pinned
    jsonargparse version in pyproject.toml (tests/test_cli.py covers these messages)."""

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


def run_name(config_files: Sequence[str | Path]) -> str:
    """The run folder's name for a stack of configs: the last one's path below ``configs/``, without ``.yaml``
    (``configs/fer2013_vgg/student.yaml`` → ``fer2013_vgg/student``); its file name alone outside ``configs/``."""
    path = Path(str(config_files[-1]))
    parts = path.with_suffix("").parts
    return "/".join(parts[len(parts) - parts[::-1].index("configs"):]) if "configs" in parts[:-1] else path.stem


class FERCLI(LightningCLI):
    """LightningCLI with the project's parser, links and ``Trainer`` (``precision: auto`` by default)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, parser_class=FERArgumentParser, trainer_class=Trainer, **kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        # One source of truth each: the data decides the classes, the model its input size.
        parser.link_arguments("data.emotions", "model.emotions")
        parser.link_arguments("model.image_size", "data.image_size")

    def before_instantiate_classes(self) -> None:
        """Name the run after its config; check what a run depends on before it starts: the log folder can be
        written; ``--ckpt_path last`` means the newest run's ``last.ckpt`` and logging on in that run's folder (one
        TensorBoard curve); a checkpoint to load is whole."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        logger = config.trainer.logger
        logger_args = getattr(logger, "init_args", None) if isinstance(logger, Namespace) else None
        if getattr(logger_args, "name", None) == DEFAULT_LOG_NAME and config.get("config"):
            logger_args.name = run_name(config.config)
        if self.subcommand is None:
            return
        save_dir = getattr(logger_args, "save_dir", None)
        if self.subcommand == "fit":
            check_writable(save_dir or config.trainer.default_root_dir or ".")
        if config.ckpt_path == "last" and save_dir is not None and getattr(logger_args, "name", None):
            logger_args.version, path = latest_run(save_dir, logger_args.name)
            config.ckpt_path = str(path)
        if config.ckpt_path not in (None, "best", "last", "hpc", "registry"):
            check_checkpoint(config.ckpt_path)

    def before_fit(self) -> None:
        keep_freed_memory()  # measured to speed up training steps (fer/malloc.py); training processes only


def lightning_cli(args: Sequence[str] | None = None, run: bool = True) -> FERCLI:
    """The project's LightningCLI on ``args`` (``sys.argv[1:]`` when None). ``run=False``: build the model, data
    module and trainer of the configs in ``args`` (no subcommand) without running anything."""
    return FERCLI(
        EmotionClassifier,
        FERDataModule,
        args=args,
        run=run,
        seed_everything_default=42,
        auto_configure_optimizers=False,
        save_config_kwargs={"overwrite": True},
    )
