"""Errors as the command line shows them: one line, the culprit first (``lightning-search: error: ...``)."""

from __future__ import annotations

import re
import sys

from lightning_search.errors import LightningSearchError

# lines of jsonargparse's messages that say nothing about what was wrong
_NOISE = re.compile(
    r"^(- )?(Given value( type)?:|Subtypes:|Errors:|Does not validate against any of the Union subtypes|"
    r"Expected a <class 'NoneType'>|Not a valid subclass of|Subclass types expect one of:|a class path \(str\)|"
    r"a dict (with|without) )"
)


def parse_error_line(message: str, command: str) -> str:
    """jsonargparse's error (dozens of lines for a wrong key inside a class's arguments) -> one line that starts
    with the offending key: ``model.init_args.learning_rat: not accepted by lightning_search.DiffusionModule``."""
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    if not lines:
        return f"invalid arguments; see `lightning-search {command} --help`"
    first = lines[0]
    unrecognised = re.match(r"unrecognized arguments: (.+)", first)
    if unrecognised:
        return (
            f"unknown option {unrecognised.group(1)} (options are matched exactly, not by prefix); see "
            f"`lightning-search {command} --help` for the valid ones"
        )
    # the reason, by how much it says: a key a class does not accept, then what went wrong with a class_path
    # (the first line under it; the other Union alternatives rarely matter), then any other line
    path, owner, reasons = [], None, {1: None, 2: None, 3: None}
    after_class = False
    for line in lines:
        key = re.match(r'(?:- )?Parser key "([^"]+)"', line)
        klass = re.search(r"class_path '([^']+)'", line)
        option = re.search(
            r"(?:(?:Option|Key) ['\"]([^'\"]+)['\"] is not (?:accepted|expected)|does not accept option '([^']+)')",
            line,
        )
        if key:
            path.append(key.group(1) if not path else f"init_args.{key.group(1)}")
            rest = line[len(key.group(0)) :].lstrip(": ")
            if rest:
                reasons[3] = rest
        elif klass:
            owner, after_class = klass.group(1), True
        elif option:
            name = option.group(1) or option.group(2)
            path.append(f"init_args.{name}" if owner else name)
            reasons[1] = reasons[1] or (f"not accepted by {owner}" if owner else "not an option here")
        elif not _NOISE.match(line):
            if after_class and reasons[2] is None:
                reasons[2] = f"{line.removeprefix('- ')} (class_path {owner})"
            reasons[3] = reasons[3] or line.removeprefix("- ")
            after_class = False
    where = ".".join(path)
    what = reasons[1] or reasons[2] or reasons[3] or first
    return f"{where}: {what}; see `lightning-search {command} --help`" if where else what


def find_our_error(err: BaseException | None) -> LightningSearchError | None:
    """Our error, also when jsonargparse or Lightning wrapped it (while instantiating a class from the config)."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, LightningSearchError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def exit_with_error(line: str, code: int = 2) -> None:
    """Print the one error line and end the process with ``code`` (2: bad input; 143 / 130: stopped)."""
    print(f"lightning-search: error: {line}", file=sys.stderr)
    raise SystemExit(code) from None
