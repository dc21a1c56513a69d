"""``lightning-search``: LightningCLI's fit / validate / test / predict, plus sweep, report, compare and
serve-verifier.

    lightning-search fit --config recipes/digits/fit.yaml
    lightning-search predict --config recipes/digits/search.yaml --ckpt_path runs/digits/generator/last.ckpt \
        --search.algorithm random --search.num_candidates 16 --search.verifier classifier
    lightning-search sweep --config recipes/digits/sweep.yaml
"""

from __future__ import annotations

import sys
from pathlib import Path

from lightning import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from typing_extensions import override

from lightning_search.errors import CheckpointError, LightningSearchError
from lightning_search.search.config import SearchConfig
from lightning_search.verifiers.base import Verifier

EXTRA_COMMANDS = ("sweep", "report", "compare", "serve-verifier")


class LightningSearchCLI(LightningCLI):
    """LightningCLI with ``--search.*`` (the search settings) and ``--verifiers`` (named verifier instances).

    Models and DataModules are given by ``class_path`` (any LightningModule / LightningDataModule), so one
    CLI trains the generator, the classifiers and fine-tunes, and predicts with or without search.
    """

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("auto_configure_optimizers", False)
        kwargs.setdefault("parser_kwargs", {"default_env": False})
        super().__init__(LightningModule, LightningDataModule, *args, subclass_mode_model=True,
                         subclass_mode_data=True, **kwargs)  # fmt: skip

    @override
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_class_arguments(SearchConfig, "search", help="Inference-time search (predict).")
        parser.add_argument(
            "--verifiers",
            type=dict[str, Verifier] | None,
            default=None,
            help="Named verifiers: the one --search.verifier names guides search, all score the results.",
        )

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
        ckpt_path = self._config().get("ckpt_path")
        if ckpt_path and ckpt_path not in ("last", "best") and not Path(ckpt_path).is_file():
            raise CheckpointError(
                f"checkpoint {ckpt_path!r} not found; train one with `lightning-search fit --config ...` "
                "or pass an existing .ckpt to --ckpt_path"
            )

    def configure_model_search(self) -> None:
        """Hand ``--search`` and ``--verifiers`` to the model (DiffusionModule.configure_search)."""
        init = self._config_init()
        if hasattr(self.model, "configure_search"):
            self.model.configure_search(init.get("search"), init.get("verifiers"))

    @override
    def before_instantiate_classes(self) -> None:
        config = self._config()
        if config.get("search") is not None and config.search.candidate_sharding:
            # every rank must see every sample: its candidates, not its samples, are split across ranks
            config.trainer.use_distributed_sampler = False

    def before_fit(self) -> None:
        self._check_ckpt_path()
        if getattr(getattr(self.model, "objective", None), "online", False):
            self.configure_model_search()  # GRPO's rewards are verifiers of the run

    def before_validate(self) -> None:
        self._check_ckpt_path()

    def before_test(self) -> None:
        self._check_ckpt_path()

    def before_predict(self) -> None:
        self._check_ckpt_path()
        self.configure_model_search()


def main(argv: list[str] | None = None) -> None:
    """Console entry point; our own errors are printed as one clear line (exit code 2)."""
    args = sys.argv[1:] if argv is None else argv
    try:
        if args and args[0] in EXTRA_COMMANDS:
            from lightning_search import commands

            getattr(commands, args[0].replace("-", "_"))(args[1:])
        else:
            LightningSearchCLI(args=argv)
    except Exception as err:
        ours = _find_our_error(err)
        if ours is None:
            raise
        print(f"lightning-search: error: {ours}", file=sys.stderr)
        raise SystemExit(2) from None


def _find_our_error(err: BaseException | None) -> LightningSearchError | None:
    """Our error, also when jsonargparse wrapped it while instantiating a class from the config."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, LightningSearchError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


if __name__ == "__main__":
    main()
