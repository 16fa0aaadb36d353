"""`rkfarm build`'s source model: which framework a file is from, and the options its loader takes.

Each frontend takes only some of build's options; one given where it means nothing is refused, never ignored.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rkfarm.errors import RkfarmError
from rkfarm.frontends import FRONTENDS, Frontend, detect

if TYPE_CHECKING:
    from rkfarm.api import RKNN

# build option (argparse dest) -> the flag as a user types it
_FLAGS = {
    "inputs": "--inputs",
    "outputs": "--outputs",
    "input_size": "--input-size",
    "blobs": "--blobs",
    "weights": "--weights",
    "input_is_nchw": "--input-is-nchw",
}
# framework -> the build options its loader uses; the rest are refused for it
_TAKES: dict[str, set[str]] = {
    "onnx": {"inputs", "outputs", "input_size"},
    "pytorch": {"input_size"},
    "caffe": {"blobs", "inputs"},
    "darknet": {"weights"},
    "tflite": {"input_is_nchw"},
    "tensorflow": {"inputs", "outputs", "input_size", "input_is_nchw"},
}
_NEEDS: dict[str, set[str]] = {
    "pytorch": {"input_size"},
    "darknet": {"weights"},
    "tensorflow": {"inputs", "outputs", "input_size"},
}


def add_source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--framework", choices=sorted(FRONTENDS),
        help="the model's framework (default: from the file's extension and content)",
    )  # fmt: skip
    p.add_argument("--blobs", type=Path, metavar="FILE", help="Caffe: the .caffemodel weights (default: random)")
    p.add_argument("--weights", type=Path, metavar="FILE", help="Darknet: the .weights file")
    p.add_argument(
        "--input-is-nchw", action="store_true",
        help="TensorFlow/TFLite: the model's inputs are already NCHW (default: NHWC, kept as the model has it)",
    )  # fmt: skip


def frontend_of(args: argparse.Namespace) -> Frontend:
    return FRONTENDS[args.framework] if args.framework else detect(args.model)


def load_source(rknn: RKNN, args: argparse.Namespace) -> Frontend:
    """Load ``args.model`` with its frontend and the options given; refuse options it does not take."""
    fe = frontend_of(args)
    given = {dest for dest in _FLAGS if getattr(args, dest, None) not in (None, False)}
    extra = sorted(given - _TAKES[fe.name])
    if extra:
        flags = ", ".join(_FLAGS[d] for d in extra)
        verb = "does" if len(extra) == 1 else "do"
        raise RkfarmError(f"{args.model}: {flags} {verb} not apply to {fe.describe} (framework {fe.name})")
    missing = sorted(_NEEDS.get(fe.name, set()) - given)
    if missing:
        flags = ", ".join(_FLAGS[d] for d in missing)
        raise RkfarmError(f"{args.model}: {fe.describe} needs {flags}")
    model, inputs, sizes, outputs = str(args.model), args.inputs, args.input_size, args.outputs
    calls: dict[str, Any] = {
        "onnx": lambda: rknn.load_onnx(model, inputs=inputs, input_size_list=sizes, outputs=outputs),
        "pytorch": lambda: rknn.load_pytorch(model, input_size_list=sizes),
        "caffe": lambda: rknn.load_caffe(model, blobs=_opt_path(args.blobs), input_name=inputs),
        "darknet": lambda: rknn.load_darknet(model, weight=str(args.weights)),
        "tflite": lambda: rknn.load_tflite(model, input_is_nchw=args.input_is_nchw),
        "tensorflow": lambda: rknn.load_tensorflow(
            model, inputs=inputs, input_size_list=sizes, outputs=outputs, input_is_nchw=args.input_is_nchw
        ),
    }
    calls[fe.name]()
    return fe


def _opt_path(value: Any) -> str | None:
    return None if value is None else str(value)
