"""The Darknet ``.cfg`` grammar: ``[section]`` headers, ``key=value`` lines, comments, comma lists.

Darknet reads a line by deleting every whitespace character in it, then looks at the first character: ``[``
opens a section, ``#``, ``;`` or nothing makes it a comment or a blank line, anything else must be
``key=value``. This parser does the same, and also drops a ``#``/``;`` comment at the end of a value (darknet
would keep it glued to the value). Each value remembers its line, so every error names the file and line.

Keys are read through ``Section``'s typed accessors, which record what was read: a layer that leaves keys
unread has keys rkfarm does not know (``Section.unread``), and those are refused rather than ignored.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rkfarm.errors import ModelLoadError, NotSupportedError

_WHITESPACE = re.compile(r"\s+")
_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


@dataclass
class Option:
    value: str
    line: int


@dataclass
class Section:
    """One ``[name]`` block and its options in file order (a key given twice is refused: which one counts?)."""

    name: str  # without the brackets, as written ("convolutional", "conv", ...)
    line: int
    path: Path
    options: dict[str, Option] = field(default_factory=dict)
    read: set[str] = field(default_factory=set)

    def where(self, key: str | None = None) -> str:
        line = self.options[key].line if key is not None and key in self.options else self.line
        return f"{self.path}: line {line}"

    def error(self, message: str, key: str | None = None) -> ModelLoadError:
        return ModelLoadError(f"{self.where(key)}: [{self.name}] {message}")

    def refuse(self, message: str, key: str | None = None) -> NotSupportedError:
        return NotSupportedError(f"{self.where(key)}: [{self.name}] {message}")

    def has(self, key: str) -> bool:
        return key in self.options

    def text(self, key: str, default: str | None = None) -> str:
        self.read.add(key)
        if key in self.options:
            return self.options[key].value
        if default is None:
            raise self.error(f"needs {key}=")
        return default

    def integer(self, key: str, default: int | None = None) -> int:
        self.read.add(key)
        if key not in self.options:
            if default is None:
                raise self.error(f"needs {key}=")
            return default
        value = self.options[key].value
        if not _INT.fullmatch(value):
            raise self.error(f"{key}={value} is not an integer", key)
        return int(value)

    def number(self, key: str, default: float) -> float:
        self.read.add(key)
        if key not in self.options:
            return default
        value = self.options[key].value
        if not _FLOAT.fullmatch(value):
            raise self.error(f"{key}={value} is not a number", key)
        return float(value)

    def ints(self, key: str) -> list[int]:
        """A required comma list of integers (``layers=-1, 61``)."""
        self.read.add(key)
        if key not in self.options:
            raise self.error(f"needs {key}=")
        items = self.options[key].value.split(",")
        if not all(_INT.fullmatch(item) for item in items):
            raise self.error(f"{key}={self.options[key].value} is not a comma list of integers", key)
        return [int(item) for item in items]

    def only_default(self, key: str, allowed: Sequence[str]) -> None:
        """Refuse ``key`` unless it is absent or one of the values that change nothing at inference."""
        self.read.add(key)
        if key in self.options and self.options[key].value not in allowed:
            value = self.options[key].value
            raise self.refuse(f"{key}={value} is not supported by rkfarm's darknet frontend", key)

    def ignore(self, keys: Sequence[str] | set[str] | frozenset[str]) -> None:
        self.read.update(keys)

    def unread(self) -> list[str]:
        return [k for k in self.options if k not in self.read]


@dataclass
class Cfg:
    path: Path
    sections: list[Section]


def _strip_comment(line: str) -> str:
    for mark in ("#", ";"):
        at = line.find(mark)
        if at >= 0:
            line = line[:at]
    return line


def parse_cfg(data: bytes, path: Path) -> Cfg:
    """The sections of a ``.cfg`` file; syntax errors name the file and line."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ModelLoadError(f"{path}: not a darknet .cfg text file (byte {exc.start} is not UTF-8)") from None
    if "\x00" in text:
        raise ModelLoadError(f"{path}: not a darknet .cfg text file (it holds NUL bytes; is it the .weights?)")
    sections: list[Section] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = _WHITESPACE.sub("", raw)
        if not line or line[0] in "#;":
            continue
        if line[0] == "[":
            line = _strip_comment(line)
            if not line.endswith("]") or len(line) < 3 or "]" in line[1:-1] or "[" in line[1:]:
                raise ModelLoadError(f"{path}: line {number}: a section header is [name], got {raw.strip()!r}")
            sections.append(Section(line[1:-1], number, path))
            continue
        line = _strip_comment(line)
        key, eq, value = line.partition("=")
        if not eq or not key or not value:
            raise ModelLoadError(f"{path}: line {number}: expected key=value or [section], got {raw.strip()!r}")
        if not sections:
            raise ModelLoadError(f"{path}: line {number}: {key}= comes before the first [section]")
        current = sections[-1]
        if key in current.options:
            first = current.options[key].line
            raise ModelLoadError(
                f"{path}: line {number}: [{current.name}] sets {key}= a second time (first on line {first})"
            )
        current.options[key] = Option(value, number)
    if not sections:
        raise ModelLoadError(f"{path}: no [net] section and no layers: not a darknet .cfg")
    if sections[0].name not in ("net", "network"):
        head = sections[0]
        raise ModelLoadError(f"{path}: line {head.line}: the first section must be [net], not [{head.name}]")
    return Cfg(path, sections)
