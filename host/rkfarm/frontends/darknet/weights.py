"""The Darknet ``.weights`` layout: a header, then each layer's float32 arrays in ``.cfg`` order, nothing else.

Header: int32 major, minor, revision, then ``seen`` (images trained on) as int64 when
``major * 10 + minor >= 2`` (and both below 1000), else as int32. Then, little-endian float32:

- convolutional: biases[n]; with batch_normalize also scales[n], rolling_mean[n], rolling_variance[n]; then
  weights[n][c / groups][size][size];
- connected: biases[out], weights[out][in]; with batch_normalize then scales, rolling_mean, rolling_variance.

Other layers hold no weights. Darknet reads what it finds and ignores a short or long file; rkfarm refuses
both: a .weights that does not match its .cfg would give wrong numbers without a word.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from rkfarm.errors import ModelLoadError, NotSupportedError
from rkfarm.frontends.darknet.layers import Connected, Conv, Layer, Network

log = logging.getLogger(__name__)

Array = npt.NDArray[np.float32]
BN_PARTS = ("scales", "rolling_mean", "rolling_variance")


@dataclass(frozen=True)
class Header:
    major: int
    minor: int
    revision: int
    seen: int
    size: int  # bytes


def read_header(data: bytes, path: Path) -> Header:
    if len(data) < 16:
        raise ModelLoadError(f"{path}: {len(data)} bytes is too short for a darknet .weights header (16 or 20 bytes)")
    major, minor, revision = struct.unpack_from("<3i", data)
    if min(major, minor, revision) < 0:
        raise ModelLoadError(f"{path}: not a darknet .weights file (version {major}.{minor}.{revision})")
    if major >= 1000 or minor >= 1000:
        raise NotSupportedError(
            f"{path}: version {major}.{minor}.{revision} marks an old transposed-weights file; rkfarm does not read it"
        )
    if major * 10 + minor >= 2:
        if len(data) < 20:
            raise ModelLoadError(f"{path}: {len(data)} bytes is too short for a version {major}.{minor} header (20)")
        (seen,) = struct.unpack_from("<q", data, 12)
        return Header(major, minor, revision, seen, 20)
    (seen,) = struct.unpack_from("<i", data, 12)
    return Header(major, minor, revision, seen, 16)


def blobs(layer: Layer) -> list[tuple[str, tuple[int, ...]]]:
    """The arrays a layer reads from the file, in file order, with their shapes."""
    p = layer.params
    if isinstance(p, Conv):
        n = p.filters
        weights = ("weights", (n, p.in_c // p.groups, p.size, p.size))
        return [("biases", (n,)), *[(k, (n,)) for k in BN_PARTS if p.batch_normalize], weights]
    if isinstance(p, Connected):
        bn = [(k, (p.outputs,)) for k in BN_PARTS] if p.batch_normalize else []
        return [("biases", (p.outputs,)), ("weights", (p.outputs, p.inputs)), *bn]
    return []


def _nbytes(shape: tuple[int, ...]) -> int:
    return 4 * int(np.prod(shape))


def read_weights(data: bytes, path: Path, net: Network, cfg_path: Path) -> dict[int, dict[str, Array]]:
    """Each weighted layer's arrays by name, checked to fill the file exactly."""
    header = read_header(data, path)
    log.debug("%s: darknet weights version %d.%d.%d, seen %d", path, header.major, header.minor, header.revision,
              header.seen)  # fmt: skip
    plan = [(layer, blobs(layer)) for layer in net.layers]
    expected = header.size + sum(_nbytes(shape) for _, parts in plan for _, shape in parts)
    offset = header.size
    out: dict[int, dict[str, Array]] = {}
    last: Layer | None = None
    for layer, parts in plan:
        if not parts:
            continue
        need = sum(_nbytes(shape) for _, shape in parts)
        if offset + need > len(data):
            raise ModelLoadError(
                f"{path}: too short for {cfg_path.name}: {layer.describe()} needs {need} bytes at offset {offset}, "
                f"{len(data) - offset} are left (the .cfg needs {expected} bytes in all, the file has {len(data)}); "
                "truncated, or the weights of another .cfg?"
            )
        arrays: dict[str, Array] = {}
        for name, shape in parts:
            count = int(np.prod(shape))
            arrays[name] = np.frombuffer(data, dtype="<f4", count=count, offset=offset).astype(np.float32)
            arrays[name] = arrays[name].reshape(shape)
            offset += 4 * count
        bad = [name for name, a in arrays.items() if not np.isfinite(a).all()]
        if bad:
            raise ModelLoadError(f"{path}: {layer.describe()} of {cfg_path.name}: {bad[0]} holds NaN or infinity")
        if "rolling_variance" in arrays and (arrays["rolling_variance"] < 0).any():
            raise ModelLoadError(f"{path}: {layer.describe()} of {cfg_path.name}: rolling_variance is negative")
        out[layer.index] = arrays
        last = layer
    if offset != len(data):
        after = f"after {last.describe()}, the last with weights" if last else "after the header (no layer has weights)"
        raise ModelLoadError(
            f"{path}: {len(data) - offset} bytes left over {after}: {cfg_path.name} needs {expected} bytes, "
            f"the file has {len(data)}: do these weights belong to another .cfg?"
        )
    return out
