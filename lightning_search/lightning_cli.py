"""``LightningSearchCLI``: LightningCLI's fit / validate / test / predict with ``--search.*`` and ``--verifiers``;
in ``pairs`` mode, predict with ``--pairs.*`` makes AI-feedback pairs. The entry point is ``cli.py``.

    lightning-search fit --config recipes/digits/fit.yaml
    lightning-search predict --config recipes/digits/search.yaml --ckpt_path runs/digits/generator/last.ckpt \
        --search.algorithm random --search.num_candidates 16 --search.verifier classifier
    lightning-search pairs --config recipes/digits/pairs.yaml
"""

from __future__ import annotations

import signal
import threading
import warnings
from argparse import ArgumentError
from pathlib import Path
from typing import ClassVar

import yaml
from lightning import LightningDataModule, LightningModule
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from typing_extensions import override

from lightning_search.cli_errors import parse_error_line
from lightning_search.errors import CheckpointError, ConfigurationError, Interrupted, RunFolderError
from lightning_search.fingerprint import fingerprint
from lightning_search.pairs import PairsConfig
from lightning_search.search.config import SearchConfig
from lightning_search.verifiers.base import Verifier

MODES = ("predict", "pairs")
SUBCOMMANDS = ("fit", "validate", "test", "predict")
# every parser raises instead of printing its usage and exiting, so that cli.main can print one line; options
# are matched exactly (argparse would take --search.num_candidate for --search.num_candidates)
PARSER_KWARGS = {"default_env": False, "exit_on_error": False, "allow_abbrev": False}


# what decides a predict run's samples (or a pairs run's pairs): its fingerprint (fingerprint.py) is made of these
PREDICT_SETTINGS = ("seed_everything", "ckpt_path", "model", "data", "search", "pairs", "verifiers")
# what decides a fit's weights besides the model, the data and the seed (max_steps / max_epochs are left out:
# resuming to train longer is the same run)
FIT_TRAINER_SETTINGS = ("precision", "accumulate_grad_batches", "gradient_clip_val", "gradient_clip_algorithm",
                        "devices", "num_nodes", "strategy", "deterministic")  # fmt: skip
# Lightning's callbacks that change what a fit computes (the others write or show it: checkpoints, progress,
# loggers, adapters), by class name: EMA / SWA, accumulation schedules, fine-tuning schedules, pruning
_DECIDING = ("WeightAveraging", "GradientAccumulationScheduler", "Finetuning", "ModelPruning")


def run_fingerprint(config, command: str) -> dict:
    """The fingerprint of a run from its parsed config (a jsonargparse Namespace of one subcommand)."""
    values = config.as_dict() if hasattr(config, "as_dict") else dict(config)
    if command == "fit":
        trainer = values.get("trainer") or {}
        callbacks = trainer.get("callbacks") or []
        callbacks = [callbacks] if isinstance(callbacks, dict) else list(callbacks)
        kept = [c for c in callbacks if any(name in str(c.get("class_path", "")) for name in _DECIDING)]
        settings = {k: values.get(k) for k in ("seed_everything", "model", "data")}
        settings["trainer"] = {**{k: trainer.get(k) for k in FIT_TRAINER_SETTINGS}, "callbacks": kept}
    else:
        settings = {k: values[k] for k in PREDICT_SETTINGS if k in values}
        settings["trainer"] = {"precision": (values.get("trainer") or {}).get("precision")}
    return fingerprint(settings, command)


def check_search_settings(search: SearchConfig) -> None:
    """Reject impossible search settings before any model loads (the algorithms and the sampler would find
    them too, but only at the first batch, after minutes of loading a real model): ``build_search`` checks
    the counts, that the algorithm exists and that it has its verifier."""
    from lightning_search.search.config import build_search

    build_search(search)


class LightningSearchCLI(LightningCLI):
    """LightningCLI with ``--search.*`` (the search settings) and ``--verifiers`` (named verifier instances).

    Models and DataModules are given by ``class_path`` (any LightningModule / LightningDataModule), so one
    CLI trains the generator, the classifiers and fine-tunes, and predicts with or without search.

    Args:
        mode: ``predict`` (search settings under ``--search``) or ``pairs`` (predict makes AI-feedback pairs,
            settings under ``--pairs``; ``lightning-search pairs``).
        progress_position: terminal line offset of a TQDM progress bar (``sweep --jobs N`` gives each of its
            processes its own, so that their bars do not draw over each other).
    """

    # Building LightningCLI's parser (the signatures of the Trainer, of each subcommand, of our settings) costs
    # ~0.1 s, as much as parsing a recipe, and the parser is the same for every CLI of one class, mode and
    # settings: a sweep and the tests run dozens of predicts in one process. So each is built once per process.
    # Lightning binds its instantiators to the CLI object, and re-registers them on the parser for each new CLI
    # (_add_instantiators; jsonargparse keeps one per class type), so a reused parser serves only the new CLI.
    # setup_parser also leaves the subcommands' parsers and method arguments on the CLI (private attributes of
    # LightningCLI 2.x): they are kept with the parser. tests/test_cli.py checks each CLI gets its own settings.
    _parsers: ClassVar[dict[tuple, tuple]] = {}

    def __init__(self, *args, mode: str = "predict", progress_position: int = 0, **kwargs) -> None:
        if mode not in MODES:
            raise ConfigurationError(f"unknown CLI mode {mode!r}; valid: {', '.join(MODES)}")
        self.mode, self.progress_position = mode, progress_position
        self._parser_key = (type(self), mode, args, repr(sorted((k, v) for k, v in kwargs.items() if k != "args")))
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("auto_configure_optimizers", False)
        main_kwargs = {**PARSER_KWARGS, "prog": "lightning-search"}
        kwargs.setdefault("parser_kwargs", {**main_kwargs, **{s: dict(PARSER_KWARGS) for s in SUBCOMMANDS}})
        super().__init__(LightningModule, LightningDataModule, *args, subclass_mode_model=True,
                         subclass_mode_data=True, **kwargs)  # fmt: skip

    @override
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        if self.mode == "pairs":
            parser.add_class_arguments(PairsConfig, "pairs", help="AI-feedback pairs: best vs worst of K samples.")
        else:
            parser.add_class_arguments(SearchConfig, "search", help="Inference-time search (predict).")
        parser.add_argument(
            "--verifiers",
            type=dict[str, Verifier] | None,
            default=None,
            help="Named verifiers: the one --search.verifier names guides search, all score the results.",
        )

    @override
    def setup_parser(self, add_subcommands: bool, main_kwargs: dict, subparser_kwargs: dict) -> None:
        cached = self._parsers.get(self._parser_key)
        if cached is None:
            super().setup_parser(add_subcommands, main_kwargs, subparser_kwargs)
            cached = (
                self.parser,
                getattr(self, "_subcommand_parsers", {}),
                getattr(self, "_subcommand_method_arguments", {}),
            )
            self._parsers[self._parser_key] = cached
        self.parser, self._subcommand_parsers, self._subcommand_method_arguments = cached

    @override
    def _dump_config(self) -> None:
        # What save_hyperparameters stores as the model's and data's hyperparameters (LightningCLI 2.x's
        # instantiators call this private hook): Lightning's own dump validates the whole config again, which
        # parse_arguments did already (~0.05 s a run); nothing has changed it since but
        # before_instantiate_classes' one boolean. The same dump otherwise: all keys, link targets included.
        if not hasattr(self, "config_dump"):
            dump = self.parser.dump(
                self.config, skip_link_targets=False, skip_unset=False, skip_validation=True, format="yaml"
            )
            self.config_dump = yaml.safe_load(dump)
            if "subcommand" in self.config:
                self.config_dump = self.config_dump[self.config.subcommand]

    @override
    def instantiate_trainer(self, **kwargs):
        with warnings.catch_warnings():
            # `logger: true` in the recipes means Lightning's default logger under default_root_dir (CSV where
            # tensorboard is not installed), which Lightning announces with a warning each time
            warnings.filterwarnings("ignore", message="Starting from v1.9.0, `tensorboardX` has been removed")
            trainer = super().instantiate_trainer(**kwargs)
        bar = trainer.progress_bar_callback
        if self.progress_position and isinstance(bar, TQDMProgressBar):
            # the recipe's bar, whatever its settings: TQDMProgressBar reads this when it opens its bars (its
            # process_position argument, which a recipe's callback list cannot take per process)
            bar._process_position = self.progress_position
        return trainer

    @override
    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        with warnings.catch_warnings():
            # the commands (pairs, sweep, compare) hand LightningCLI the arguments they built: not a mistake
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
            super().parse_arguments(parser, args)

    @override
    def _parse_ckpt_path(self) -> None:
        # LightningCLI would re-apply the checkpoint's saved hyperparameters *over* the command line, so
        # `predict --ckpt_path X --model.init_args.sampler.steps 1` would silently sample with the training
        # steps. Our recipes state the model in full; the checkpoint only provides weights.
        return

    def _config(self):
        return self.config[self.subcommand] if self.subcommand else self.config

    def _config_init(self):
        return self.config_init[self.subcommand] if self.subcommand else self.config_init

    def _check_ckpt_path(self) -> None:
        """--ckpt_path exists and is a whole checkpoint file (empty, truncated or foreign files are one error)."""
        from lightning_search.checkpoints import check_checkpoint_file

        ckpt_path = self._config().get("ckpt_path")
        if not ckpt_path or ckpt_path in ("last", "best", "hpc"):
            return
        if not Path(ckpt_path).is_file():
            raise CheckpointError(
                f"checkpoint {ckpt_path!r} not found; train one with `lightning-search fit --config ...` "
                "or pass an existing .ckpt to --ckpt_path"
            )
        check_checkpoint_file(ckpt_path, "checkpoint")

    def configure_model_search(self) -> None:
        """Hand ``--search`` (or ``--pairs``) and ``--verifiers`` to the model (DiffusionModule.configure_search)."""
        from lightning_search.module import DiffusionModule

        init = self._config_init()
        if self.mode == "pairs":
            if not isinstance(self.model, DiffusionModule):
                raise ConfigurationError(
                    "pairs sample from a DiffusionModule; the model is a " + type(self.model).__name__
                )
            self.model.configure_pairs(init.get("pairs"), init.get("verifiers"))
        elif hasattr(self.model, "configure_search"):
            self.model.configure_search(init.get("search"), init.get("verifiers"))

    @override
    def before_instantiate_classes(self) -> None:
        config = self._config()
        if self.mode == "predict" and config.get("search") is not None:
            check_search_settings(SearchConfig(**config.search.as_dict()))  # before any model is loaded
            if config.search.candidate_sharding:
                # every rank must see every sample: its candidates, not its samples, are split across ranks
                config.trainer.use_distributed_sampler = False

    # -- the subcommands, stopped by signals --------------------------------------------------------------
    def fit(self, **kwargs) -> None:
        """``trainer.fit``; a SIGTERM / SIGINT ends it with :class:`Interrupted` naming the resume checkpoint."""
        from lightning_search.callbacks.checkpoint import FinalCheckpoint

        checkpoint = next((c for c in self.trainer.callbacks if isinstance(c, FinalCheckpoint)), None)
        where = f"fit into {str(self.trainer.default_root_dir)!r}"
        if checkpoint is None:
            resume = "no FinalCheckpoint callback, so nothing to resume from: rerun to start over"
        else:
            resume = f"resume with the same command plus --ckpt_path {checkpoint.resume_path(self.trainer)}"
        self._stopped_by_signals(self.trainer.fit, where, resume, **kwargs)

    def predict(self, **kwargs) -> None:
        where = "pairs" if self.mode == "pairs" else f"predict into {str(self.trainer.default_root_dir)!r}"
        self._stopped_by_signals(self.trainer.predict, where, "rerun the same command to resume", **kwargs)

    @staticmethod
    def _stopped_by_signals(run, where: str, resume: str, **kwargs) -> None:
        """Run a fit / predict that a SIGTERM or a first Ctrl-C stops at the next step / batch boundary.

        Lightning's fit loop checks for SIGTERM after every step and ends with ``SIGTERMException`` (a
        SystemExit with code 0); the writers check after every batch of predict and raise
        :class:`Interrupted`. A first Ctrl-C is handed to Lightning's own SIGTERM handler, so that it stops at
        the same boundary instead of wherever the KeyboardInterrupt lands (mid-step, the weights half
        updated); a second one interrupts at once. Both end as :class:`Interrupted` (exit codes 143, 130).
        """
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        received: list[str] = []
        previous = None

        def on_sigint(signum, frame) -> None:
            received.append("SIGINT")
            signal.signal(signal.SIGINT, previous)
            lightning = signal.getsignal(signal.SIGTERM)
            if not callable(lightning):  # not inside Lightning's run (still loading): stop here
                raise KeyboardInterrupt
            lightning(signal.SIGTERM, frame)

        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGINT, on_sigint)
        try:
            run(**kwargs)
        except SIGTERMException:
            raise Interrupted(received[0] if received else "SIGTERM", where, resume) from None
        except Interrupted as err:
            if received:
                raise Interrupted("SIGINT", where, resume) from None
            raise err
        except SystemExit as err:
            if isinstance(err.__context__, KeyboardInterrupt):
                raise Interrupted("SIGINT", where, resume) from None
            raise
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)

    def before_fit(self) -> None:
        self._check_ckpt_path()
        self.check_fit_resume()
        if getattr(getattr(self.model, "objective", None), "online", False):
            self.configure_model_search()  # GRPO's rewards are verifiers of the run

    def check_fit_resume(self) -> None:
        """Every FinalCheckpoint carries this fit's fingerprint; resuming from a checkpoint made by a fit with
        other settings is refused, naming them (max_steps / max_epochs may change: training longer is fine)."""
        from lightning_search.callbacks.checkpoint import FINGERPRINT_KEY, FinalCheckpoint
        from lightning_search.checkpoints import load_checkpoint
        from lightning_search.fingerprint import fingerprint_differences

        run = run_fingerprint(self._config(), "fit")
        for callback in self.trainer.callbacks:
            if isinstance(callback, FinalCheckpoint):
                callback.run_fingerprint = run
        ckpt_path = self._config().get("ckpt_path")
        if not ckpt_path or ckpt_path in ("last", "best", "hpc"):
            return
        stored = load_checkpoint(ckpt_path, "checkpoint", map_location="cpu", mmap=True).get(FINGERPRINT_KEY)
        differences = fingerprint_differences(stored, run) if stored else []
        if differences:
            shown = "; ".join(differences[:6]) + (f"; and {len(differences) - 6} more" if len(differences) > 6 else "")
            raise RunFolderError(
                f"checkpoint {ckpt_path!r} was made by a fit with other settings ({shown}); resume it with its "
                "settings, or start over without --ckpt_path"
            )

    def before_validate(self) -> None:
        self._check_ckpt_path()

    def before_test(self) -> None:
        self._check_ckpt_path()

    def before_predict(self) -> None:
        self._check_ckpt_path()
        self.configure_model_search()
        if self.mode == "pairs":
            self.prepare_pairs_run()
        else:
            self.resume_predict_run()

    def prepare_pairs_run(self) -> None:
        from lightning_search.callbacks.pairs import PairsWriter

        writer = next((c for c in self.trainer.callbacks if isinstance(c, PairsWriter)), None)
        if writer is None:
            raise ConfigurationError(
                "lightning-search pairs needs lightning_search.callbacks.PairsWriter in trainer.callbacks"
            )
        folder = writer.folder(self.trainer)
        folder.check_writable()
        folder.claim(run_fingerprint(self._config(), "pairs"))

    def resume_predict_run(self) -> None:
        """The explicit resume step: the writer's run folder says which sample ids are done; the DataModule
        leaves them out and the writer is told so (nothing is passed behind either's back)."""
        from lightning_search.callbacks.writer import PredictionWriter
        from lightning_search.data.conditions import ConditionDataModule

        writer = next((c for c in self.trainer.callbacks if isinstance(c, PredictionWriter)), None)
        if writer is None:
            return
        folder = writer.folder(self.trainer)
        folder.check_writable()
        folder.claim(run_fingerprint(self._config(), "predict"), fresh=not writer.resume)
        done = folder.done_ids() if writer.resume else set()
        if done and not isinstance(self.datamodule, ConditionDataModule):
            raise ConfigurationError(
                f"{str(folder.root)!r} holds {len(done)} records, but {type(self.datamodule).__name__} cannot skip "
                "samples (a ConditionDataModule can); write into an empty folder"
            )
        if done:
            self.datamodule.skip_samples(done)
        writer.resume_from(done)


class _ParseOnlyCLI(LightningSearchCLI):
    """Parses and validates a command line, instantiates nothing and runs nothing."""

    def before_instantiate_classes(self) -> None:
        return

    def instantiate_classes(self) -> None:
        return

    def after_instantiate_classes(self) -> None:
        return

    def _run_subcommand(self, subcommand: str) -> None:
        return


def parse_runs(config: str, runs: dict[str, list[str]], mode: str = "predict") -> dict[str, dict]:
    """Parse every run's ``predict --config CONFIG ARGS`` before any runs, so that a wrong key in the last point
    of a sweep fails at once, with the same one-line error as on the command line, naming the run.
    -> {run name: its fingerprint}, to tell a finished run folder of the same settings from another."""
    cli, out = None, {}
    for name, args in runs.items():
        argv = ["predict", "--config", config, *args]
        try:
            if cli is None:
                cli = _ParseOnlyCLI(args=argv, mode=mode)
                parsed = cli.config
            else:
                parsed = cli.parser.parse_args(argv)
        except ArgumentError as err:
            raise ConfigurationError(f"run {name!r}: {parse_error_line(str(err), 'predict')}") from None
        out[name] = run_fingerprint(parsed["predict"], mode)
    return out
