"""``python -m lit_transfer {fit,validate,test,predict}``: LightningCLI with the project's defaults."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from lit_transfer.accelerators import prepare_trainer_kwargs  # also registers "npu" before any Trainer exists
from lit_transfer.callbacks import PredictionCSVWriter
from lit_transfer.checkpointing import AtomicCheckpointIO, RNGStateCheckpoint, find_last_checkpoint
from lit_transfer.data.base import ClassificationDataModule
from lit_transfer.errors import UserError
from lit_transfer.memory_format import ChannelsLast
from lit_transfer.reports import ValidationReport
from lit_transfer.safe_load import safe_load
from lit_transfer.tasks.classifier import ImageClassifier

PROG = "python -m lit_transfer"


_NOISE = (
    "Does not validate against",
    "Subtypes:",
    "Errors",
    "Given value",
    "Expected a <class 'NoneType'>",
    "Expected a path but",
    "Problem with given class_path",
)


def _one_line(message: str) -> str:
    """jsonargparse explains a bad value as a nested, many-line tree; keep the full key and the most
    specific reason, e.g. ``model.optimizer.lr: Expected a <class 'float'>``."""
    keys, details, class_paths = [], [], []
    for raw in str(message).splitlines():
        line = raw.strip().lstrip("- ").strip()
        keys += re.findall(r'Parser key "([^"]+)"', line)
        class_paths += re.findall(r"given class_path '([^']+)'", line)
        line = re.sub(r'Parser key "[^"]+":?', "", line)
        line = re.sub(r"^Type .*? expects a function or a callable class: ", "", line)
        line = re.sub(r"\. Got value: .*$", "", line).strip(" :")
        if line and not line.startswith(_NOISE):
            details.append(line)
    detail = details[0] if details else " ".join(str(message).split())
    if "has no attribute" in detail or "No module named" in detail:
        detail = f"unknown class_path ({detail})"
    key = ".".join(dict.fromkeys(keys))
    return f"{key}: {detail}" if key else detail


class Parser(LightningArgumentParser):
    """Argument parser whose user errors are one line and exit status 2."""

    def error(self, message: str, ex: Exception | None = None):
        if not self.exit_on_error:
            return super().error(message, ex)
        sys.stderr.write(f"lit_transfer: error: {_one_line(message)}  (see: {PROG} --help)\n")
        sys.exit(2)


class LitTransferCLI(LightningCLI):
    """Subcommands fit/validate/test/predict; model and data named by ``class_path`` in YAML."""

    def __init__(self, args=None, run: bool = True, **kwargs) -> None:
        super().__init__(
            model_class=ImageClassifier,
            datamodule_class=ClassificationDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            parser_class=Parser,
            auto_configure_optimizers=False,
            trainer_defaults={"callbacks": [PredictionCSVWriter(), RNGStateCheckpoint()]},
            parser_kwargs={"prog": PROG},
            args=args,
            run=run,
            **kwargs,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # The data module knows its classes; the model gets them instead of the user typing them twice.
        parser.link_arguments(
            "data", "model.init_args.class_names", compute_fn=self._class_names, apply_on="instantiate"
        )
        parser.link_arguments(
            "data", "model.init_args.num_classes", compute_fn=self._num_classes, apply_on="instantiate"
        )
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/acc",
                "checkpoint.mode": "max",
                "checkpoint.filename": "best-epoch{epoch:02d}-val_acc{val/acc:.4f}",
                "checkpoint.auto_insert_metric_name": False,
            }
        )
        # Lightning 2.6 writes `save_last` only when a top-k checkpoint is written too, i.e. only
        # when val/acc improves; resuming needs the newest state, so last.ckpt has its own
        # callback, written every epoch.
        parser.add_lightning_class_args(ModelCheckpoint, "last_checkpoint")
        parser.set_defaults(
            {
                "last_checkpoint.filename": "last",
                "last_checkpoint.save_top_k": 1,
                "last_checkpoint.every_n_epochs": 1,
                "last_checkpoint.enable_version_counter": False,
            }
        )
        # Off by default; `--step_checkpoint.every_n_train_steps N` also saves every N steps, so a
        # long epoch is not lost whole (`--ckpt_path last` takes the newest checkpoint of any kind).
        parser.add_lightning_class_args(ModelCheckpoint, "step_checkpoint")
        parser.set_defaults(
            {
                "step_checkpoint.filename": "step{step:08d}",
                "step_checkpoint.auto_insert_metric_name": False,
                "step_checkpoint.every_n_train_steps": 0,
                "step_checkpoint.every_n_epochs": 0,
            }
        )
        parser.add_lightning_class_args(LearningRateMonitor, "lr_monitor")
        parser.add_lightning_class_args(ValidationReport, "report")
        parser.add_lightning_class_args(ChannelsLast, "channels_last")

    def _class_names(self, data: ClassificationDataModule) -> list[str] | None:
        """The class names the model is built with: the data's, else (predicting without a data
        folder) the checkpoint's; both known and different is the user's mistake."""
        saved = self.checkpoint_class_names
        if data.class_names is not None and saved is not None and list(data.class_names) != list(saved):
            raise UserError(
                f"the checkpoint was trained on {len(saved)} classes {saved} but the data has "
                f"{len(data.class_names)} classes {data.class_names}: use matching data, or start from "
                "the checkpoint's weights with --model.init_from instead of --ckpt_path"
            )
        return data.class_names if data.class_names is not None else saved

    def _num_classes(self, data: ClassificationDataModule) -> int | None:
        names = self._class_names(data)
        return None if names is None else len(names)

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        args = list(sys.argv[1:] if args is None else args)
        self.checkpoint_class_names = None
        # As LightningCLI.parse_arguments, minus its warning about args given while sys.argv has some.
        self.config = parser.parse_args(self._with_checkpoint_defaults(args))
        subcommand = self.config.get("subcommand")
        if subcommand and self.config[subcommand].get("ckpt_path") == "last":
            found = find_last_checkpoint(self.config[subcommand].trainer.default_root_dir)
            if found is not None:
                print(f"resuming from {found}")
                self.config[subcommand].ckpt_path = str(found)
                self.checkpoint_class_names = _saved_class_names(safe_load(found, "checkpoint", mmap=True))

    def _with_checkpoint_defaults(self, args: list[str]) -> list[str]:
        """Put the model and data settings saved in ``--ckpt_path`` first, as defaults that the
        user's config and flags override, so ``predict --ckpt_path X --data.predict_root imgs``
        needs no config: the net, class names and eval transforms come from the checkpoint."""
        ckpt_path = _arg_value(args, "--ckpt_path")
        if ckpt_path == "last":  # resolved now when it can be, so predict needs no --config either
            found = find_last_checkpoint(_arg_value(args, "--trainer.default_root_dir"))
            if found is not None:
                print(f"using checkpoint {found}")
                ckpt_path = str(found)
                args = [ckpt_path if a == "last" and args[i - 1] == "--ckpt_path" else a for i, a in enumerate(args)]
                args = [f"--ckpt_path={ckpt_path}" if a == "--ckpt_path=last" else a for a in args]
        if not args or ckpt_path is None or not Path(ckpt_path).is_file():
            return args
        ckpt = safe_load(ckpt_path, "checkpoint", mmap=True)
        self.checkpoint_class_names = _saved_class_names(ckpt)
        defaults = []
        for key, flag in (("hyper_parameters", "--model"), ("datamodule_hyper_parameters", "--data")):
            hparams = ckpt.get(key) or {}
            if "_class_path" in hparams:
                defaults += [flag, _spec(hparams)]
        return [args[0], *defaults, *args[1:]]

    def instantiate_trainer(self, **kwargs):
        trainer = super().instantiate_trainer(**kwargs)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # not one the user chose
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        return trainer

    def _run_subcommand(self, subcommand: str) -> None:
        try:
            super()._run_subcommand(subcommand)
        except RuntimeError as err:
            if "Error(s) in loading state_dict" not in str(err):
                raise
            ckpt_path = self.config[subcommand].get("ckpt_path")
            raise UserError(
                f"checkpoint {ckpt_path!r} does not fit the network {type(self.model.net).__name__} "
                f"configured here ({str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else err}): "
                "use the config the checkpoint was trained with, or --model.init_from to take only its matching weights"
            ) from err

    def _parse_ckpt_path(self) -> None:
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if ckpt_path and ckpt_path != "last" and not Path(ckpt_path).is_file():
            raise UserError(f"checkpoint {ckpt_path!r} does not exist: check --ckpt_path")
        try:
            super()._parse_ckpt_path()
        except SystemExit:
            raise
        except Exception as err:  # torch's safe loader refusing a file, a truncated file, ...
            raise UserError(f"cannot read checkpoint {ckpt_path!r}: {str(err).splitlines()[0]}") from err

    def _instantiate_trainer(self, config: dict, callbacks: list) -> Trainer:
        # Lightning's strategy/precision defaults are wrong for an accelerator it does not know (npu).
        config = prepare_trainer_kwargs(config)
        try:
            return super()._instantiate_trainer(config, callbacks)
        except (MisconfigurationException, ValueError) as err:  # bad accelerator/devices/strategy flags
            raise UserError(f"trainer settings: {str(err).strip().splitlines()[0]}") from err


def _saved_class_names(ckpt: dict) -> list[str] | None:
    return (ckpt.get("hyper_parameters") or {}).get("class_names")


def _arg_value(args: list[str], name: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _spec(hparams: dict) -> str:
    init_args = {k: v for k, v in hparams.items() if not k.startswith("_")}
    return json.dumps({"class_path": hparams["_class_path"], "init_args": init_args})


def _user_error(err: BaseException | None) -> UserError | None:
    """The UserError behind ``err``, if any (jsonargparse wraps errors raised while it links or
    instantiates)."""
    while err is not None:
        if isinstance(err, UserError):
            return err
        err = err.__cause__ or err.__context__
    return None


def main(args=None) -> LitTransferCLI:
    try:
        return LitTransferCLI(args=args)
    except Exception as err:
        user_error = _user_error(err)
        if user_error is None:
            raise
        sys.stderr.write(f"lit_transfer: error: {user_error}\n")
        sys.exit(2)


if __name__ == "__main__":
    main()
