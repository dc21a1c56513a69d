"""``lightning-search``: the entry point. LightningCLI's fit / validate / test / predict (``lightning_cli.py``),
and pairs, sweep, report, compare, serve-verifier and readme (``commands.py``).

    lightning-search --help                       every command, one line each
    lightning-search fit --config recipes/digits/fit.yaml
    lightning-search predict --config recipes/digits/search.yaml --search.num_candidates 16
    lightning-search sweep --config recipes/digits/sweep.yaml

Every error of ours, and every bad input the parsers catch, ends the command with one line
``lightning-search: error: ...`` that names what was wrong first and says what to do (exit code 2); a run
stopped by SIGTERM or SIGINT says so and how to resume it (exit codes 143 and 130).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from lightning.fabric.utilities.exceptions import MisconfigurationException

from lightning_search import commands
from lightning_search.cli_errors import exit_with_error, find_our_error, parse_error_line
from lightning_search.errors import Interrupted
from lightning_search.lightning_cli import LightningSearchCLI

__all__ = ["COMMANDS", "LightningSearchCLI", "main"]

# name -> (one line for --help, the function running it); LightningCLI's own subcommands have None
COMMANDS: dict[str, tuple[str, Callable[[list[str]], None] | None]] = {
    "fit": ("train or fine-tune a model (generator, classifiers, DPO, LoRA)", None),
    "validate": ("run a model's validation loop", None),
    "test": ("run a model's test loop", None),
    "predict": ("sample, with or without search, into a run folder", None),
    "pairs": ("AI-feedback preference pairs (best vs worst of K)", commands.pairs),
    "sweep": ("many predicts (in one process, or --jobs N), then the scaling report", commands.sweep),
    "report": ("redraw a sweep's report from its scaling.csv or its config", commands.report),
    "compare": ("compare runs: tables, bars, images side by side", commands.compare),
    "serve-verifier": ("serve a verifier over HTTP (RemoteVerifier)", commands.serve_verifier),
    "readme": ("rewrite (or --check) the README's results from make demo's runs", commands.readme),
}


def help_text() -> str:
    """``lightning-search --help``: every command with one line."""
    parser = argparse.ArgumentParser(
        prog="lightning-search",
        description="Fine-tune and search diffusion models through one Lightning module.",
        epilog="`lightning-search COMMAND --help` shows the options of a command.",
    )
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    for name, (line, _) in COMMANDS.items():
        sub.add_parser(name, help=line, add_help=False)
    return parser.format_help()


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run a command; our errors and bad input become one line (exit code 2)."""
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help"):
        (sys.stdout if args else sys.stderr).write(help_text())
        raise SystemExit(0 if args else 2)
    name = args[0]
    if name not in COMMANDS:
        exit_with_error(f"unknown command {name!r}; the commands: {', '.join(COMMANDS)} (lightning-search --help)")
    function = COMMANDS[name][1]
    try:
        if function is not None:
            function(args[1:])
        else:
            LightningSearchCLI(args=argv)  # None: LightningCLI reads sys.argv itself
    except argparse.ArgumentError as err:
        exit_with_error(parse_error_line(str(err), name))
    except Interrupted as err:
        exit_with_error(str(err), err.exit_code)
    except Exception as err:
        ours = find_our_error(err)
        if ours is None and isinstance(err, MisconfigurationException):  # Lightning's own, about its settings
            exit_with_error(str(err).strip().splitlines()[0])
        if ours is None:
            raise
        if isinstance(ours, Interrupted):
            exit_with_error(str(ours), ours.exit_code)
        exit_with_error(str(ours))


if __name__ == "__main__":
    main()
