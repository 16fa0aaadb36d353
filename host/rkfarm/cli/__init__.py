"""The ``rkfarm`` command line: a thin layer over the library. Errors print one line and exit 1.

One module per group of commands; each has a ``register(sub)`` that adds its subcommands, and is listed in
``COMMANDS`` below with the one-line help ``rkfarm --help`` shows. Only the module of the command being run is
imported (the others appear as names with their help), so ``rkfarm --help`` and a mistyped command answer at
once instead of loading numpy, protobuf and ONNX first.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from rkfarm import __version__
from rkfarm.cli._help import HelpFormatter, Parser, add_verbose, subparsers

EPILOG = """\
examples:
  rkfarm info model.onnx                           # inputs, dynamic dims, opset: what --input-size it needs
  rkfarm build model.onnx -o model.rkfm --input-size 1,3,48,192 --mean 127.5,127.5,127.5 --std 127.5,127.5,127.5
  rkfarm info model.rkfm
  rkfarm run model.rkfm line.png -o outputs/
  rkfarm info model.rkfm --json | jq .header.inputs
  rkfarm devices                                   # agents on the network (mDNS + inventory)
  rkfarm perf model.rkfm --device rk3588-board-1 --perf-debug
  rkfarm mem model.rkfm --device 192.168.1.40:50551 --json
  rkfarm run model.rkfm line.png --device rk3588-board-1
  rkfarm keygen && rkfarm encrypt model.rkfm --level 2   # boards need the same farm key
  rkfarm analyze model.onnx --dataset dataset.txt --input-size 1,3,48,192 --mean 127.5 --std 127.5
  rkfarm hybrid step1 model.onnx --dataset dataset.txt --proposal    # then edit model.quantization.cfg
  rkfarm hybrid step2 model.model model.data model.quantization.cfg -o model.rkfm
  rkfarm doctor                                    # what is installed, what is missing, which agents answer
  eval "$(rkfarm --print-completion bash)"         # tab completion (needs argcomplete)

A model package (.rkfm) holds the optimized model and how to feed it (layout, mean/std). `rkfarm build` makes
one from ONNX, PyTorch, Caffe, Darknet, TFLite or TensorFlow; the Python API (from rkfarm import RKNN) does the
same with the vendor's method names. -v (info) and -vv (debug) go before or after the command. --json output is
described in docs/CLI-JSON.md.
"""

# command -> (module, one-line help), in the order --help lists them; a module's commands are contiguous
COMMANDS: dict[str, tuple[str, str]] = {
    "build": ("build", "build a model package from an ONNX, PyTorch, Caffe, Darknet, TFLite or TensorFlow model"),
    "run": ("run", "run a model package on inputs (images or .npy) and save the outputs as .npy"),
    "info": ("info", "describe a model file: a package, a vendor .rknn or a source model (inputs, dims, opset)"),
    "devices": ("boards", "list agents found by mDNS and in the inventory"),
    "perf": ("boards", "time a model package on an agent (or the simulator)"),
    "mem": ("boards", "memory used by a model package on an agent (or the simulator)"),
    "farm": ("farm", "the board farm: boards by selector, holding boards for yourself"),
    "history": ("history", "list the recorded eval_perf / eval_memory runs of a model (RKFARM_HISTORY)"),
    "compare": ("history", "compare two recorded runs, boards or models; exit 1 on a regression"),
    "analyze": ("quant", "which layers of the int8 model lose accuracy (error_analysis.txt, report.html)"),
    "hybrid": ("quant", "hybrid quantization: keep chosen layers of an int8 model in float"),
    "keygen": ("crypto", "make a farm key file (the secret shared by this host and its boards)"),
    "encrypt": ("crypto", "encrypt a model package for the farm key, or seal it to chosen boards"),
    "codegen": ("codegen", "write a demo project that runs a model on a board (C++ for a vendor .rknn, else Python)"),
    "vendor": ("vendor", "set up or check the vendor's RKNN-Toolkit2 (for `rkfarm build --compiler vendor`)"),
    "doctor": ("doctor", "check this machine: Python, extras, agents reachable, the vendor's side environment"),
}
_TOP_OPTIONS_WITH_VALUE = ("--print-completion",)


def chosen_command(argv: Sequence[str]) -> str | None:
    """The subcommand named on the command line (before any parsing), or None."""
    skip = False
    for word in argv:
        if skip:
            skip = False
            continue
        if word == "--":
            return None
        if word in _TOP_OPTIONS_WITH_VALUE:
            skip = True
            continue
        if not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def build_parser(argv: Sequence[str] | None = None, full: bool = True) -> argparse.ArgumentParser:
    """The parser; with ``full=False`` only the command named in ``argv`` gets its options (the rest are names
    with their help), which is all that parsing that command line needs."""
    parser = Parser(
        prog="rkfarm", description="rkfarm: convert, quantize, simulate and run models for Rockchip-NPU style boards.",
        epilog=EPILOG, formatter_class=HelpFormatter, fromfile_prefix_chars="@",
    )  # fmt: skip
    parser.add_argument("--version", action="version", version=f"rkfarm {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    parser.add_argument(
        "--print-completion", metavar="SHELL", choices=("bash", "zsh", "fish", "tcsh"),
        help="print the shell code that completes rkfarm's commands and options (needs argcomplete), e.g. "
        'eval "$(rkfarm --print-completion bash)"',
    )  # fmt: skip
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    words = list(sys.argv[1:] if argv is None else argv)
    full = full or any(w.startswith("@") for w in words)  # options from a file: any command may be in there
    wanted = chosen_command(words)
    registered: set[str] = set()
    for name, (module, help_text) in COMMANDS.items():
        if full or module == (COMMANDS[wanted][0] if wanted else None):
            if module not in registered:
                importlib.import_module(f"rkfarm.cli.{module}").register(sub)
                registered.add(module)
        else:
            sub.add_parser(name, help=help_text, add_help=False)
    add_verbose(parser)
    if wanted:
        parser.suggest_from = _tree(subparsers(parser)[wanted])
    return parser


def _tree(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    return [parser, *(p for child in subparsers(parser).values() for p in _tree(child))]


def _setup_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("rkfarm: %(message)s" if verbosity < 2 else "%(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger("rkfarm")
    for old in [h for h in root.handlers if getattr(h, "_rkfarm_cli", False)]:
        root.removeHandler(old)  # main() called again in one process (tests): one handler, not one per call
    handler._rkfarm_cli = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False


def _completion(parser: argparse.ArgumentParser, shell: str | None) -> int | None:
    """Answer a completion request (argcomplete's environment) or ``--print-completion``; None otherwise."""
    if "_ARGCOMPLETE" not in os.environ and shell is None:
        return None
    try:
        import argcomplete
        from argcomplete.shell_integration import shellcode
    except ImportError:
        if shell is None:
            return 1  # a completion request without argcomplete installed: complete nothing
        print("rkfarm: error: shell completion needs argcomplete: pip install 'rkfarm[completion]'", file=sys.stderr)
        return 1
    if shell is None:
        argcomplete.autocomplete(parser)  # answers on its own channel and exits
        return 1
    print(shellcode(["rkfarm"], shell=shell), end="")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from rkfarm.cli._errors import report

    words = list(sys.argv[1:] if argv is None else argv)
    completing = "_ARGCOMPLETE" in os.environ
    try:
        parser = build_parser(words, full=completing)
        if completing:
            done = _completion(parser, None)
            return done if done is not None else 1
        args = parser.parse_args(words)
        if args.print_completion:
            return int(_completion(parser, args.print_completion) or 0)
        if args.command is None:
            parser.print_help(sys.stderr)
            return 2
        _setup_logging(args.verbose + getattr(args, "sub_verbose", 0))
        args.argv = words
        return int(args.func(args))
    except KeyboardInterrupt:
        print("rkfarm: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        return report(exc, words)
