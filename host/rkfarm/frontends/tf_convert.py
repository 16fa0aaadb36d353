"""What the TFLite and TensorFlow frontends share: tf2onnx run in process, quietly, and a check of what it made.

tf2onnx imports TensorFlow (seconds): it is imported on the first load_tflite()/load_tensorflow() call only.
TensorFlow's native libraries log to the process's stderr (absl notices at import, the TFLite delegate at
conversion) whatever ``TF_CPP_MIN_LOG_LEVEL`` says, and tf2onnx logs every step at INFO: while rkfarm imports
and runs them, their stderr output, Python warnings and log records all go to rkfarm's logger at DEBUG.

tf2onnx converts with ``continue_on_error``: a TensorFlow op it cannot map stays in the graph under its
TensorFlow name. ``check_converted`` refuses such a graph, naming the ops, so that nothing but standard ONNX
(the default domain at opset 17) leaves a frontend.
"""

from __future__ import annotations

import logging
import os
import struct
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import ModuleType
from typing import Any

import onnx

from rkfarm import graph
from rkfarm.errors import ModelLoadError, NotSupportedError

log = logging.getLogger(__name__)
OPSET = 17
_FOREIGN_LOGGERS = ("tf2onnx", "tensorflow", "absl", "h5py")
_quiet_lock = threading.RLock()  # stderr is one per process: one quiet section at a time


class _Forward(logging.Handler):
    """Keeps the records of TensorFlow's and tf2onnx's loggers (for rkfarm's log, once the quiet section ends)
    and the first line of each error (for the message of a failed conversion)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []
        self.errors: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a foreign record with bad arguments: keep its template
            message = str(record.msg)
        if record.levelno >= logging.ERROR:
            cause = record.exc_info[1] if record.exc_info else None  # "failed to convert node X" + the reason
            text = (str(cause) if cause is not None and str(cause).strip() else message).strip()
            self.errors.append(text.splitlines()[0] if text else record.name)
        self.lines.append(f"{record.name}: {message}")


@contextmanager
def quiet() -> Iterator[_Forward]:
    """Route TensorFlow's and tf2onnx's output (native stderr, warnings, log records) to rkfarm's log at DEBUG.

    Everything is held until the section ends and logged then: meanwhile file descriptor 2 is a temporary file,
    and a log handler writing to stderr would land there too."""
    with _quiet_lock:
        forward = _Forward()
        native: list[str] = []
        caught: list[warnings.WarningMessage] = []
        saved = []
        for name in _FOREIGN_LOGGERS:
            logger = logging.getLogger(name)
            saved.append((logger, logger.handlers[:], logger.propagate, logger.level))
            logger.handlers = [forward]
            logger.propagate = False
            logger.setLevel(logging.INFO)
        try:
            with _native_stderr(native), warnings.catch_warnings(record=True) as recorded:
                warnings.simplefilter("always")
                try:
                    yield forward
                finally:
                    caught.extend(recorded)
        finally:
            for logger, handlers, propagate, level in saved:
                logger.handlers = handlers
                logger.propagate = propagate
                logger.setLevel(level)
            for line in native:
                log.debug("tensorflow (native): %s", line)
            for line in forward.lines:
                log.debug("%s", line)
            for w in caught:
                first = str(w.message).strip().splitlines()[0] if str(w.message).strip() else w.category.__name__
                log.debug("warning from %s: %s", Path(w.filename).name, first)


@contextmanager
def _native_stderr(lines: list[str]) -> Iterator[None]:
    """Catch what is written to file descriptor 2 meanwhile (native code's logging) into ``lines``."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no usable fd 2 (embedded interpreters): leave it be
        yield
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            with suppress(OSError, ValueError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines.extend(line.rstrip() for line in sink.read().decode("utf-8", "replace").splitlines() if line.strip())


def import_converter(loader: str, extra: str) -> ModuleType:
    """``tf2onnx.convert`` (which imports TensorFlow), imported quietly; NotSupportedError when not installed."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow loads: its C++ log threshold
    try:
        with quiet():
            import tensorflow  # noqa: F401  (first, so that a broken TensorFlow is named as such)
            import tf2onnx.convert
    except ImportError as exc:
        missing = getattr(exc, "name", None) or str(exc)
        raise NotSupportedError(
            f"{loader} needs TensorFlow and tf2onnx: pip install 'rkfarm[{extra}]' (cannot import {missing})"
        ) from None
    module: ModuleType = tf2onnx.convert
    return module


def run_converter(convert: Callable[[], Any], path: Path, what: str) -> onnx.ModelProto:
    """Call a tf2onnx ``from_*`` function quietly; its failure is a one-line ModelLoadError naming ``path``."""
    with quiet() as forward:
        try:
            result = convert()
        except Exception as exc:
            text = str(exc).strip()
            first = text.splitlines()[0] if text else type(exc).__name__
            if isinstance(exc, (struct.error, IndexError, UnicodeDecodeError)):
                first = f"the file is truncated or damaged ({first})"
            raise ModelLoadError(f"{path}: tf2onnx cannot convert {what}: {first}") from None
    proto = result[0] if isinstance(result, tuple) else result
    if not isinstance(proto, onnx.ModelProto):
        raise ModelLoadError(f"{path}: tf2onnx returned no model for {what}")
    check_converted(proto, path, forward.errors)
    return proto


def _nodes(g: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    for node in g.node:
        yield node
        for attr in node.attribute:
            for sub in [attr.g, *attr.graphs]:
                yield from _nodes(sub)


def check_converted(model: onnx.ModelProto, path: Path, errors: list[str] | None = None) -> None:
    """Refuse anything but standard ONNX at opset 17 (in place: drops opset imports no node uses)."""
    foreign = sorted(
        {
            f"{n.domain}.{n.op_type}" if n.domain else n.op_type
            for n in _nodes(model.graph)
            if n.domain not in ("", "ai.onnx") or not onnx.defs.has(n.op_type)
        }
    )
    if foreign or model.functions:
        ops = ", ".join(foreign) or ", ".join(f.name for f in model.functions)
        why = f" (tf2onnx: {errors[0]})" if errors else ""
        raise NotSupportedError(f"{path}: no standard ONNX conversion for op(s) {ops}{why}")
    used = [o for o in model.opset_import if o.domain in ("", "ai.onnx")]
    if [o.version for o in used] != [OPSET]:
        raise ModelLoadError(f"{path}: tf2onnx made opset {[o.version for o in used]}, not {OPSET}")
    del model.opset_import[:]
    model.opset_import.extend(used)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ModelLoadError(f"{path}: tf2onnx made an invalid ONNX model: {first}") from None


def mark_layouts(model: onnx.ModelProto, input_is_nchw: bool) -> None:
    """The vendor's layout rule for TensorFlow models: 4-D inputs are NHWC (kept so, and inference takes NHWC
    arrays) unless ``input_is_nchw``, which says the model's own inputs are already NCHW (then rkfarm treats
    them as any NCHW input: NHWC arrays are transposed to them, ``data_format='nchw'`` ones are taken as is)."""
    if input_is_nchw:
        return
    names = [v.name for v in graph.real_inputs(model) if len(v.type.tensor_type.shape.dim) == 4]
    if names:
        graph.mark_nhwc(model, names)
        log.debug("NHWC inputs: %s", ", ".join(names))
