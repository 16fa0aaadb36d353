"""Failures as one line: rkfarm's errors in the words of the command line, OSError and ImportError named.

The library's messages name the Python API (``input_size_list``, ``build(do_quantization=True)``), which a user
of ``rkfarm build`` never typed; :func:`in_flags` says them with the flags instead. Anything else (a bug) keeps its
traceback.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Sequence

from rkfarm.errors import RkfarmError

# (pattern, replacement), applied in order: the specific spellings before the general ones
_FLAGS: list[tuple[str, str]] = [
    (
        r"load_onnx\(\.\.\., input_size_list=\[\[\.\.\.\]\]\) \(e\.g\. \[([^\]]*)\]\)",
        "--input-size (e.g. --input-size {dims})",
    ),
    (r"load_onnx\(inputs=\.\.\.\) at inner tensors", "--inputs at inner tensors"),
    (r"load_onnx\(([a-z_]+)=\.\.\.\)", r"--\1"),
    (r"give it in input_size_list", "give it with --input-size"),
    (r"\binput_size_list\b", "--input-size"),
    (r"build\(do_quantization=True, dataset=\.\.\.\)", "build --quantize --dataset FILE"),
    (r"build\(do_quantization=True\) needs dataset='dataset\.txt'", "--quantize needs --dataset FILE"),
    (r"use build\(do_quantization=False\) for a float model", "leave out --quantize for a float model"),
    (r"build\(do_quantization=False\)", "build without --quantize"),
    (r"build\(auto_hybrid=True\)", "--auto-hybrid"),
    (r"build\(rknn_batch_size=([^)]*)\)", r"--batch \1"),
    (r"\bdo_quantization=True\b", "--quantize"),
    (r"\brknn_batch_size=(\S+?)(?=[:,)\s]|$)", r"--batch \1"),
    (r"\bdataset='dataset\.txt'", "--dataset FILE"),
    (r"init_runtime\(target='?([a-z0-9]+)'?, device_id=\.\.\.\) with a board", r"--device ID with a \1 board"),
    (r"init_runtime\(target='?([a-z0-9]+)'?, device_id=\.\.\.\)", r"--device ID (a \1 board agent)"),
    (r"init_runtime\(target=[^)]*\)", "--device"),
    (r"device_id='host:port'", "--device host:port"),
    (r"\bdevice_id=", "--device "),
    (r"config\(float_dtype='float32'\)", "--float-dtype float32"),
    (r"config\(optimization_level=(\d)\)", r"--optimization-level \1"),
    (r"config\(target_platform=[^)]*\)", "--target"),
    (r"config\(mean_values=[^)]*\)", "--mean"),
    (r"config\(std_values=[^)]*\)", "--std"),
]
_COMPILED = [(re.compile(p), r) for p, r in _FLAGS]


def _substitute(replacement: str) -> str | Callable[[re.Match[str]], str]:
    if "{dims}" not in replacement:
        return replacement
    return lambda m: replacement.format(dims=m.group(1).replace(" ", ""))


def in_flags(message: str) -> str:
    """``message`` with the Python API's spellings replaced by the command line's flags."""
    for pattern, replacement in _COMPILED:
        message = pattern.sub(_substitute(replacement), message)
    return message


def os_error_line(exc: OSError) -> str:
    """An OSError as ``path: reason`` (``FileNotFoundError(2, ...)`` reads as a sentence, not a repr)."""
    reason = exc.strerror or str(exc)
    names = [str(f) for f in (exc.filename, exc.filename2) if f is not None]
    if names:
        return f"{' -> '.join(names)}: {reason[:1].lower() + reason[1:]}"
    return reason


def import_error_line(exc: ImportError) -> str:
    missing = exc.name or ""
    if missing in ("onnx", "onnxslim", "PIL", "cv2", "yaml", "tqdm") or "rkfarm[host]" in str(exc):
        what = missing or "a dependency"
        return f"this command needs the host extras ({what} is missing): pip install 'rkfarm[host]'"
    if missing:
        return f"{exc} (pip install the package that provides {missing!r})"
    return str(exc)


def report(exc: BaseException, argv: Sequence[str]) -> int:
    """Print ``exc`` as one line and return the exit code; re-raise what is not an expected failure."""
    if isinstance(exc, BrokenPipeError):  # `rkfarm info --json | head`: the reader left; say nothing, as cat does
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    if isinstance(exc, RkfarmError):
        line = in_flags(str(exc))
    elif isinstance(exc, OSError):
        line = os_error_line(exc)
    elif isinstance(exc, ImportError):
        line = import_error_line(exc)
    else:
        raise exc
    text = " ".join(part.strip() for part in line.splitlines() if part.strip()) or type(exc).__name__
    print(f"rkfarm: error: {text}", file=sys.stderr)
    return 1
