"""``python -m lit_transfer {fit,validate,test,predict}``: LightningCLI composed with the project's
model, data modules, callbacks and defaults. ``--ckpt_path`` is resolved in ``cli.checkpoints``,
errors are translated in ``cli.errors``."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from lit_transfer.accelerators import prepare_trainer_kwargs  # also registers "npu" before any Trainer exists
from lit_transfer.callbacks import (
    EMA,
    AtomicCheckpointIO,
    ChannelsLast,
    EarlyStop,
    PredictionCSVWriter,
    RNGStateCheckpoint,
    RunLogger,
    ValidationReport,
)
from lit_transfer.cli.args import arg_value
from lit_transfer.cli.checkpoints import CKPT_FLAG, Checkpoint, read_checkpoint, with_checkpoint
from lit_transfer.cli.errors import Parser, checkpoint_mismatch, program_name, trainer_settings_error, user_errors_exit
from lit_transfer.cli.quiet import quiet_third_party
from lit_transfer.cli.runs import LOGS, RunFolder, last_of_run, run_name, run_to_continue
from lit_transfer.cli.trainer import LitTransferTrainer
from lit_transfer.data.base import ClassificationDataModule
from lit_transfer.errors import UserError
from lit_transfer.files import new_file, remove_stale_temp_files
from lit_transfer.models import ImageClassifier

NO_MODEL_TO_PREDICT = (
    "predict needs a trained model: give --ckpt_path <checkpoint file> (a run's best-*.ckpt or last.ckpt), "
    "or --config <task config> with --ckpt_path last"
)


class LitTransferCLI(LightningCLI):
    """Subcommands fit/validate/test/predict; model and data named by ``class_path`` in YAML."""

    def __init__(self, args=None, run: bool = True, **kwargs) -> None:
        quiet_third_party()
        self.checkpoint: Checkpoint | None = None  # what --ckpt_path names, read once
        super().__init__(
            model_class=ImageClassifier,
            datamodule_class=ClassificationDataModule,
            trainer_class=LitTransferTrainer,
            subclass_mode_model=True,
            subclass_mode_data=True,
            parser_class=Parser,
            auto_configure_optimizers=False,
            trainer_defaults={"callbacks": [PredictionCSVWriter(), RNGStateCheckpoint()]},
            parser_kwargs={"prog": program_name()},
            args=args,
            run=run,
            **kwargs,
        )

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """Lightning's subcommands and ``lr_find`` (``LitTransferTrainer.lr_find``)."""
        return {**LightningCLI.subcommands(), "lr_find": {"model", "datamodule"}}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--run_name",
            type=str | None,
            default=None,
            help="Folder of this task's runs under lightning_logs/ (default: the first --config file's name, "
            "else <data>-<net>); --ckpt_path last looks only among runs of this name",
        )
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
                # "best" is for evaluating and predicting: weights, settings and class names, no
                # optimizer state (half the size or less); last.ckpt keeps the whole training state.
                "checkpoint.save_weights_only": True,
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
        # Off until --early_stopping.monitor names a metric (callbacks/early_stopping.py).
        parser.add_lightning_class_args(EarlyStop, "early_stopping")
        # Off until --ema.decay is given (callbacks/ema.py).
        parser.add_lightning_class_args(EMA, "ema")
        parser.add_lightning_class_args(LearningRateMonitor, "lr_monitor")
        parser.add_lightning_class_args(ValidationReport, "report")
        parser.add_lightning_class_args(ChannelsLast, "channels_last")

    def _class_names(self, data: ClassificationDataModule) -> list[str] | None:
        """The class names the model is built with: the data's, else (predicting without a data
        folder) the checkpoint's; both known and different is the user's mistake."""
        saved = self.checkpoint.class_names if self.checkpoint else None
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
        """As LightningCLI's, minus its warning about args given while sys.argv has some, plus the
        settings saved in ``--ckpt_path`` as defaults (``cli.checkpoints``); ``last`` is looked for
        among the runs of the task the other arguments name (``cli.runs``)."""
        args = list(sys.argv[1:] if args is None else args)
        named = arg_value(args, CKPT_FLAG)
        asks_help = bool({"-h", "--help"} & set(args))
        if args[:1] == ["predict"] and named is None and arg_value(args, "--config") is None and not asks_help:
            raise UserError(NO_MODEL_TO_PREDICT)
        if named is not None and named != "last":
            self.checkpoint = read_checkpoint(named)
        else:
            self.config = parser.parse_args(args)
            subcommand = self.config.get("subcommand")
            settings = self.config[subcommand] if subcommand else self.config
            if settings.get("ckpt_path") is None:
                if subcommand == "predict" and settings.model.init_args.get("init_from") is None:
                    raise UserError(NO_MODEL_TO_PREDICT)
                return
            if settings.ckpt_path == "last":
                root = settings.trainer.default_root_dir
                self.checkpoint = last_of_run(root, run_name(settings), settings.model)
            else:
                self.checkpoint = read_checkpoint(settings.ckpt_path)
        if args[0] == "fit" and not self.checkpoint.full_state:
            path = self.checkpoint.path
            raise UserError(
                f"checkpoint {str(path)!r} holds only the weights (as every best-*.ckpt does), not the training "
                f"state to resume: resume from the run's last.ckpt, or start a new run from these weights with "
                f"--model.init_from {path}"
            )
        self.config = parser.parse_args(with_checkpoint(args, self.checkpoint))

    def _parse_ckpt_path(self) -> None:
        """Nothing to do: ``parse_arguments`` applied the checkpoint's settings once, as defaults.

        Overridden because LightningCLI has no public switch for this step, which would read the
        checkpoint again and let its settings override the user's config and flags.
        """

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        config = {**self.config_init.get(str(self.subcommand), self.config_init).get("trainer", {}), **kwargs}
        if config.get("logger") in (None, True):  # Lightning's default logger, in a folder of the run's own
            config["logger"] = self._run_logger(config.get("default_root_dir") or os.getcwd())
        # Lightning's strategy/precision defaults are wrong for an accelerator it does not know (npu).
        try:
            trainer = super().instantiate_trainer(**prepare_trainer_kwargs(config))
        except (MisconfigurationException, ValueError) as err:  # bad accelerator/devices/strategy flags
            raise trainer_settings_error(err) from err
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # not one the user chose
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        return trainer

    def before_fit(self) -> None:
        # A fresh run reads its weight files only when it starts, after the data scan; check them first.
        if self.config[self.subcommand].get("ckpt_path") is None:
            self.model.check_initial_weight_files()
        # Images are prepared as the net's weights expect, for whatever the config leaves unset.
        expected = self.model.expected_input()
        if self.datamodule.follow(expected):
            rank_zero_info(f"images prepared as {expected.source} expects: {self.datamodule.preprocessing.describe()}")

    before_validate = before_test = before_predict = before_lr_find = before_fit

    def after_fit(self) -> None:
        """One line at the end of a fit: the best score and its epoch, where the run is, how to view it."""
        trainer = self.trainer
        best = next((c for c in trainer.checkpoint_callbacks if c.monitor and c.best_model_path), None)
        if best is None or not trainer.is_global_zero:
            return
        epoch = re.search(r"epoch(\d+)", Path(best.best_model_path).name)  # our filename: best-epochNN-...
        at = f" at epoch {int(epoch[1])}" if epoch else ""
        logs = f"; view it with: tensorboard --logdir {trainer.logger.save_dir}" if trainer.logger else ""
        print(f"best {best.monitor} {float(best.best_model_score):.4f}{at}: {best.best_model_path}{logs}")

    def _run_logger(self, default_root_dir: str) -> RunLogger:
        """The folder of this run (``cli.runs``): a fit gets a new ``version_<n>`` in its task's folder,
        or, resumed from a run's newest checkpoint, goes on in that run's folder (one curve in
        TensorBoard, "best" kept across the resume); the other commands write into the run folder of
        the checkpoint they evaluate (unless ``--trainer.default_root_dir`` names another folder)."""
        settings = self.config[self.subcommand] if self.subcommand else self.config  # run=False: no subcommand
        name = run_name(settings)
        if self.subcommand != "fit":
            run = RunFolder.holding(self.checkpoint.path) if self.checkpoint else None
            given = settings.trainer.default_root_dir  # another root than the run's: the user wants it there
            if run is None or (given is not None and Path(given).resolve() != run.logs.parent.resolve()):
                return RunLogger(Path(default_root_dir) / LOGS, name, command=str(self.subcommand))
            return RunLogger(run.path, "", command=str(self.subcommand))
        run = run_to_continue(self.checkpoint) if self.checkpoint else None
        if run is None:
            return RunLogger(Path(default_root_dir) / LOGS, name, version=SLURMEnvironment.job_id())
        for stale in remove_stale_temp_files(run.path / "checkpoints"):
            print(f"removed {stale}, left by an interrupted checkpoint write")
        # The run's config.yaml stays as it was; this resume's settings are saved next to it.
        self.save_config_kwargs["config_filename"] = new_file(run.path, "config-resumed", ".yaml").name
        print(f"resuming in {run.path}")
        return RunLogger(run.logs, run.name, version=run.version)

    def _run_subcommand(self, subcommand: str) -> None:
        """Overridden because no public LightningCLI hook wraps the subcommand's call, where a
        checkpoint of another network fails to load and where a run that fails can give back its
        folder."""
        try:
            super()._run_subcommand(subcommand)
        except BaseException as err:
            if self.trainer.global_step == 0:
                for logger in self.trainer.loggers:
                    if isinstance(logger, RunLogger):
                        logger.discard_if_unused()
            if isinstance(err, MisconfigurationException):  # e.g. a resume with max_epochs already reached
                raise trainer_settings_error(err) from err
            ckpt_path = self.config[subcommand].get("ckpt_path")
            user_error = checkpoint_mismatch(err, ckpt_path, type(self.model.net).__name__)
            if user_error is None:
                raise
            raise user_error from err


def main(args=None) -> LitTransferCLI:
    with user_errors_exit():
        return LitTransferCLI(args=args)
