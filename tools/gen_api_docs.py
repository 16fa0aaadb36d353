"""Write docs/API.md, the Python API reference, from the code's own signatures and docstrings.

What it covers: ``rkfarm.RKNN`` (the RKNN-Toolkit2 facade) with every ``config()`` parameter and its default,
``rkfarm.perf.PerfReport``, ``rkfarm_agent.lite.RKNNLite`` (the board-side API) and the exceptions of
``rkfarm.errors``. tests/test_api_docs.py regenerates it and fails if the committed page is stale.

    python tools/gen_api_docs.py             # rewrite docs/API.md
    python tools/gen_api_docs.py --out FILE  # write elsewhere (the staleness check)
"""

from __future__ import annotations

import argparse
import inspect
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "docs" / "API.md"

HEADER = """\
# Python API reference

Generated from the docstrings by `python tools/gen_api_docs.py` (tests/test_api_docs.py keeps it fresh); do not
edit by hand. The vendor's names and defaults are kept: a script written for RKNN-Toolkit2 runs after changing
its import (docs/FROM-VENDOR.md). Methods return the vendor's codes (0 ok, -1 fail) unless
`RKNN(raise_errors=True)` raises the exceptions listed at the end.
"""


def _doc(obj: Any) -> str:
    return inspect.getdoc(obj) or "(no docstring)"


def _signature(name: str, fn: Any) -> str:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return f"{name}(...)"
    params = [p for p in sig.parameters.values() if p.name != "self"]
    return f"{name}({', '.join(str(p) for p in params)})"


def _members(cls: type) -> Iterator[tuple[str, Any]]:
    """Public methods and properties in source order (the order the class presents them)."""
    seen = set()
    for klass in reversed(cls.__mro__[:-1]):
        if not klass.__module__.startswith("rkfarm"):
            continue  # what a base such as str brings is Python's, not rkfarm's
        for name, value in vars(klass).items():
            if name.startswith("_") or name in seen or not (callable(value) or isinstance(value, property)):
                continue
            if isinstance(value, type):
                continue
            seen.add(name)
    order = list(vars(cls))
    for name in sorted(seen, key=lambda n: order.index(n) if n in order else len(order)):
        yield name, inspect.getattr_static(cls, name)


def _class_section(title: str, cls: type, prefix: str) -> list[str]:
    lines = [f"## {title}", "", _doc(cls), ""]
    for name, value in _members(cls):
        if isinstance(value, property):
            lines += [f"### `{prefix}.{name}` (property)", "", _doc(value.fget), ""]
            continue
        fn = value.__func__ if isinstance(value, (classmethod, staticmethod)) else value
        lines += [f"### `{prefix}.{_signature(name, getattr(cls, name))}`", "", _doc(fn), ""]
    return lines


def _config_section() -> list[str]:
    from rkfarm.config import RknnConfig

    defaults = RknnConfig()
    lines = [
        "### `config()` parameters",
        "",
        "In the vendor's order (positional arguments follow it); the defaults are the vendor's.",
        "",
        "| # | parameter | default |",
        "| --- | --- | --- |",
    ]
    for i, name in enumerate(RknnConfig.parameter_names(), start=1):
        lines.append(f"| {i} | `{name}` | `{getattr(defaults, name)!r}` |")
    return [*lines, ""]


def _errors_section() -> list[str]:
    from rkfarm import errors

    lines = ["## Exceptions (`rkfarm.errors`)", "", _doc(errors), ""]
    for name in errors.__all__:
        cls = getattr(errors, name)
        bases = ", ".join(b.__name__ for b in cls.__bases__)
        lines += [f"### `{name}({bases})`", "", _doc(cls), ""]
    return lines


def render() -> str:
    from rkfarm.api import RKNN
    from rkfarm.perf import PerfReport
    from rkfarm_agent.lite import RKNNLite

    lines = [*HEADER.splitlines(), ""]
    lines += ["Contents: [RKNN](#rknn-from-rkfarm-import-rknn), [PerfReport](#perfreport-rkfarmperf), "
              "[RKNNLite](#rknnlite-from-rkfarm_agentlite-import-rknnlite), "
              "[exceptions](#exceptions-rkfarmerrors).", ""]  # fmt: skip
    rknn = _class_section("RKNN (`from rkfarm import RKNN`)", RKNN, "RKNN")
    config_at = next(i for i, line in enumerate(rknn) if line.startswith("### `RKNN.config("))
    rknn[config_at + 3 : config_at + 3] = _config_section()
    lines += rknn
    lines += _class_section("PerfReport (`rkfarm.perf`)", PerfReport, "PerfReport")
    lines += _class_section("RKNNLite (`from rkfarm_agent.lite import RKNNLite`)", RKNNLite, "RKNNLite")
    lines += _errors_section()
    text = "\n".join(line.rstrip() for line in lines).rstrip() + "\n"
    return text.replace(str(REPO) + "/", "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the Python API reference (docs/API.md).")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"default: {DEFAULT_OUT.relative_to(REPO)}")
    args = parser.parse_args(argv)
    args.out.write_text(render(), encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
