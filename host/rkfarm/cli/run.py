"""`rkfarm run`: a package on input files (images or .npy), outputs saved as .npy."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rkfarm.cli._common import _opened, add_device_args
from rkfarm.errors import RkfarmError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from rkfarm.runtime import Runtime
    from rkfarm_proto.package import ModelPackage

log = logging.getLogger("rkfarm.cli")

EPILOG = """\
examples:
  rkfarm run cls.rkfm line.png                          # outputs/output_0_<name>.npy
  rkfarm run cls.rkfm line.npy -o out/ --json           # an NHWC (or unambiguous NCHW) array
  rkfarm run cls.rkfm chw.npy --data-format nchw        # say the layout where the shape cannot tell
  rkfarm run cls.rkfm line.png --device rk3588-board-1  # on a board agent (its session is closed on exit)
  rkfarm run cls.rkfm line.png --device 192.168.1.40    # host without port: the default port 50551

Images are decoded to RGB uint8 (grayscale for one-channel inputs) and fed NHWC, as the vendor's runtime takes
them; an image of another size is resized to the model's input size (OpenCV bilinear, as calibration does) and
the command says so. mean/std from the package are applied unless --pass-through.
"""


def _add_run(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="run a model package on inputs (images or .npy) and save the outputs as .npy",
        description="Run a package on the simulator (or on an agent with --device) and save each output as .npy.",
        epilog=EPILOG,
    )
    p.add_argument("model", type=Path, help="model package (.rkfm)")
    p.add_argument("inputs", nargs="+", type=Path, help="one file per model input, in order (.npy, png, jpg, bmp)")
    p.add_argument("-o", "--output-dir", type=Path, default=Path("outputs"), help="default: ./outputs")
    p.add_argument(
        "--data-format", type=str.lower, choices=("nhwc", "nchw"), metavar="{nhwc,nchw}",
        help=".npy inputs' layout (default: NHWC, or NCHW when the array's shape says so unambiguously)",
    )  # fmt: skip
    p.add_argument("--nchw", action="store_true", help="the same as --data-format nchw")
    p.add_argument("--pass-through", action="store_true", help="skip layout conversion and mean/std")
    p.add_argument("--rgb2bgr", action="store_true", help="swap image channels to BGR")
    p.add_argument("--json", action="store_true", help="print a JSON summary of the outputs (docs/CLI-JSON.md)")
    add_device_args(p)
    p.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    if args.nchw:
        if args.data_format == "nhwc":
            raise RkfarmError("--nchw and --data-format nhwc contradict each other")
        args.data_format = "nchw"
    _check_output_dir(args.output_dir)
    with _opened(args) as (package, runtime):
        return _run(args, package, runtime)


def _check_output_dir(folder: Path) -> None:
    import os

    existing = next((p for p in [folder, *folder.parents] if p.exists()), Path("."))
    if not existing.is_dir():
        raise RkfarmError(f"-o {folder}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RkfarmError(f"-o {folder}: {existing} is not writable")


def image_input(path: Path, dims: list[int], layout: str, rgb2bgr: bool) -> npt.NDArray[np.uint8]:
    """An image as the model's input takes it: HWC uint8, resized (cv2 bilinear, as calibration) with a log line
    when its size differs from the model's."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    from rkfarm.errors import InputError

    if len(dims) != 4:
        raise InputError(f"{path}: an image for input of shape {dims}, which is not an image input; give a .npy")
    channels, height, width = (dims[1], dims[2], dims[3]) if layout == "nchw" else (dims[3], dims[1], dims[2])
    mode = {1: "L", 3: "RGB", 4: "RGBA"}.get(channels)
    if mode is None:
        raise InputError(f"{path}: the input has {channels} channels, not an image's 1, 3 or 4; give a .npy")
    try:
        with Image.open(path) as img:
            arr = np.asarray(img.convert(mode), dtype=np.uint8)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except UnidentifiedImageError:
        raise InputError(f"{path}: not an image Pillow can decode") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read image: {exc}") from None
    height, width = (height if height > 0 else arr.shape[0]), (width if width > 0 else arr.shape[1])
    if arr.shape[:2] != (height, width):
        from rkfarm.quant.dataset import resize_bilinear

        log.warning(
            "%s: %dx%d image resized to %dx%d, the model's input size (bilinear, as calibration resizes)",
            path, arr.shape[1], arr.shape[0], width, height,
        )  # fmt: skip
        arr = np.asarray(resize_bilinear(arr, height, width), dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, np.newaxis]
    if rgb2bgr and channels >= 3:
        arr = np.concatenate([arr[..., 2::-1], arr[..., 3:]], axis=-1)
    return arr


def _run(args: argparse.Namespace, package: ModelPackage, runtime: Runtime) -> int:
    import numpy as np

    from rkfarm.images import IMAGE_SUFFIXES, read_input
    from rkfarm_proto.v1 import common_pb2

    specs = list(package.header.inputs)
    if len(args.inputs) != len(specs):
        names = ", ".join(s.tensor.name for s in specs)
        raise RkfarmError(f"the model takes {len(specs)} input(s) ({names}); {len(args.inputs)} file(s) given")
    arrays: list[Any] = []
    formats: list[str | None] = []
    for path, spec in zip(args.inputs, specs):
        if path.suffix.lower() in IMAGE_SUFFIXES:
            layout = "nhwc" if spec.tensor.layout == common_pb2.LAYOUT_NHWC else "nchw"
            arrays.append(image_input(path, list(spec.tensor.shape), layout, args.rgb2bgr))
            formats.append("nhwc")
        else:
            arrays.append(read_input(path))
            formats.append(args.data_format)  # None: the runtime tells NHWC from NCHW by shape, as the API does
    outputs = runtime.inference(arrays, formats, [int(args.pass_through)] * len(specs))
    args.output_dir.mkdir(parents=True, exist_ok=True)
    summary = []
    for i, (out_spec, out) in enumerate(zip(package.header.outputs, outputs)):
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in out_spec.name)[:80]
        dest = args.output_dir / f"output_{i}_{safe}.npy"
        np.save(dest, out)
        flat = np.asarray(out).ravel()
        summary.append(
            {
                "name": out_spec.name,
                "path": str(dest),
                "shape": [int(d) for d in out.shape],
                "dtype": str(out.dtype),
                "argmax": int(flat.argmax()) if flat.size else None,
                "max": float(flat.max()) if flat.size else None,
            }
        )
    if args.json:
        print(json.dumps({"outputs": summary, "where": runtime.where}, indent=2))
    else:
        for item in summary:
            print(f"{item['name']}: {item['dtype']}{item['shape']} argmax={item['argmax']} -> {item['path']}")
    return 0


def register(sub: Any) -> None:
    """Add this module's subcommands."""
    _add_run(sub)
