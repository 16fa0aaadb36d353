"""How the command line talks: wrapped help, "did you mean" on typos, ``-v`` after any subcommand.

Standard library only: ``rkfarm --help`` must not pay for numpy, protobuf or ONNX.
"""

from __future__ import annotations

import argparse
import difflib
import re
import shutil
import sys
import textwrap
from collections.abc import Iterator
from typing import Any, NoReturn

_UNRECOGNIZED = re.compile(r"unrecognized arguments: (.*)")
_INVALID_CHOICE = re.compile(r"invalid choice: '([^']*)' \(choose from (.*)\)")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and epilogs wrapped to the terminal paragraph by paragraph; lines that start with spaces
    (examples, tables) and paragraphs ending in ':' followed by such lines are kept as written."""

    def __init__(self, prog: str, **kwargs: Any) -> None:
        width = min(shutil.get_terminal_size((100, 24)).columns, 120) - 2
        kwargs.setdefault("width", max(60, width))
        kwargs.setdefault("max_help_position", 32)
        super().__init__(prog, **kwargs)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "\n".join(wrap_paragraphs(text, width, indent))


def wrap_paragraphs(text: str, width: int, indent: str = "") -> Iterator[str]:
    """``text`` with each run of unindented lines refilled to ``width``; indented lines and blank lines kept."""
    block: list[str] = []

    def flush() -> Iterator[str]:
        if block:
            yield from textwrap.wrap(" ".join(block), width, initial_indent=indent, subsequent_indent=indent)
            block.clear()

    for line in text.splitlines():
        if not line.strip() or line[:1].isspace() or (line.rstrip().endswith(":") and not block):
            yield from flush()
            yield indent + line if line.strip() else ""
        else:
            block.append(line.strip())
    yield from flush()


class Parser(argparse.ArgumentParser):
    """argparse with suggestions: an unknown flag or an invalid choice says what was probably meant."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
        self.suggest_from: list[argparse.ArgumentParser] = []  # set on the top parser: the command being run

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}{self._hint(message)}\n")

    def _hint(self, message: str) -> str:
        choice = _INVALID_CHOICE.search(message)
        if choice:
            options = re.findall(r"'([^']*)'", choice.group(2))
            close = difflib.get_close_matches(choice.group(1), options, n=1, cutoff=0.5)
            return f" (did you mean {close[0]!r}?)" if close else ""
        unknown = _UNRECOGNIZED.search(message)
        if not unknown:
            return ""
        flags = [opt for p in [self, *self.suggest_from] for opt in option_strings(p)]
        hints = []
        for word in unknown.group(1).split():
            if word.startswith("-"):
                close = difflib.get_close_matches(word.split("=", 1)[0], flags, n=1, cutoff=0.6)
                if close:
                    hints.append(f"{word} -> {close[0]}")
        return f" (did you mean: {', '.join(hints)}?)" if hints else ""


def option_strings(parser: argparse.ArgumentParser) -> list[str]:
    return [s for action in parser._actions for s in action.option_strings if s.startswith("--")]


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The parser's subcommands, by name (empty for a leaf)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def leaves(parser: argparse.ArgumentParser, prefix: str = "") -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every runnable command under ``parser`` as ('hybrid step1', parser), depth first."""
    subs = subparsers(parser)
    if not subs:
        yield prefix.strip(), parser
    for name, sub in subs.items():
        yield from leaves(sub, f"{prefix} {name}")


def add_verbose(parser: argparse.ArgumentParser) -> None:
    """``-v`` on every runnable subcommand too (counted with the top-level one: ``rkfarm -v build -v`` is -vv)."""
    for _, leaf in leaves(parser):
        if leaf is not parser and "-v" not in leaf._option_string_actions:
            leaf.add_argument(
                "-v", "--verbose", dest="sub_verbose", action="count", default=0, help="more log output (-vv: debug)"
            )
