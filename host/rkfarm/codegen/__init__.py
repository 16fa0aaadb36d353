"""``codegen``: a small demo project that runs a model package on a board, as the vendor's ``RKNN.codegen``.

What the package's payload decides:

- a vendor ``.rknn`` (``load_rknn('model.rknn')``): a C++ CMake project over librknnrt's C API (``cpp.py``), with
  the raw ``.rknn``; it builds with the board's toolchain (or natively on the board) against librknnrt;
- an ONNX payload (what rkfarm builds): librknnrt cannot run it, so a Python demo over rkfarm's board-side
  ``rkfarm_agent.lite.RKNNLite`` (``python_demo.py``), with the package file.

Inputs (``inputs``: one file per model input; .npy, or jpg/png/bmp images decoded on the host to RGB uint8 NHWC,
resized to the input's size when the package records it) are copied into the project and fed by default.

Encrypted packages get the Python demo, whatever their payload, with the package copied still encrypted:
RKNNLite decrypts it in memory with the board's farm key (``RKFARM_AGENT_FARM_KEY_FILE``), as an agent does. The
C++ demo would need the plaintext ``.rknn`` in the folder (librknnrt cannot open rkfarm's encryption), so an
encrypted vendor-payload package does not get it (a warning says so); its inputs must be given, since only
librknnrt knows them. No expected outputs are written for encrypted packages (the host does not decrypt).

The folder: created if missing; an existing non-empty one is refused unless ``overwrite`` (the files of an
earlier generation are then removed first, see ``project.py``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from rkfarm.codegen.cpp import DEFAULT_LOOPS, check_inputs, write_cpp_demo
from rkfarm.codegen.project import (
    MANIFEST,
    Array,
    CodegenError,
    InputPaths,
    Project,
    input_paths,
    model_stem,
    prepare_folder,
    read_inputs,
    safe_name,
)
from rkfarm.codegen.python_demo import generated_inputs, write_python_demo
from rkfarm.errors import InputError, NotSupportedError
from rkfarm_proto.package import ModelPackage
from rkfarm_proto.v1 import common_pb2, package_pb2

log = logging.getLogger(__name__)

EXPORT_FOLDER = "rknn_deploy_demo"  # export_rknn(cpp_gen_cfg=True) writes the demo here, beside the model


@dataclass(frozen=True)
class Generated:
    kind: str  # "cpp" or "python"
    folder: Path
    files: list[str]


def generate(
    package: ModelPackage,
    output_path: str | os.PathLike[str],
    inputs: InputPaths = None,
    overwrite: bool = False,
    *,
    replace_demo: bool = False,
    loops: int = DEFAULT_LOOPS,
) -> Generated:
    """Write the demo project of ``package`` into ``output_path``. ``replace_demo``: an existing folder may be
    replaced only if it holds an earlier rkfarm demo (what export_rknn(cpp_gen_cfg=True) does)."""
    if loops < 1:
        raise CodegenError(f"codegen: loops must be at least 1, got {loops}")
    header = package.header
    vendor = header.payload_kind == package_pb2.PAYLOAD_KIND_RKNN
    name = header.source_model_name or "model"
    if not vendor and header.payload_kind != package_pb2.PAYLOAD_KIND_ONNX:
        raise NotSupportedError(f"codegen: {name}: unknown payload kind {header.payload_kind}")
    paths = input_paths(inputs)
    sources = [str(p) for p in paths]
    if vendor and package.encrypted:
        if not paths:
            raise CodegenError(
                f"codegen: {name} is an encrypted vendor .rknn, whose inputs only librknnrt on the board can tell: "
                "give one input file per model input"
            )
        log.warning(
            "codegen: %s is an encrypted vendor .rknn: librknnrt cannot open rkfarm's encryption, so instead of the "
            "C++ demo (which needs the plaintext .rknn) this is the Python demo over RKNNLite, which decrypts it "
            "with the board's farm key",
            name,
        )
    arrays = read_inputs(paths) if vendor else _onnx_inputs(header, paths)
    if vendor:
        check_inputs(arrays, sources)
    folder = prepare_folder(output_path, overwrite, replace_demo)
    project = Project(folder)
    stem = model_stem(name)
    if vendor and not package.encrypted:
        write_cpp_demo(project, package, stem, arrays, sources, loops)
        kind = "cpp"
    else:
        expected = None if package.encrypted else _simulate(package, arrays)
        write_python_demo(project, package, stem, arrays, sources, expected, loops)
        kind = "python"
    project.finish(kind)
    log.info("codegen: wrote the %s demo of %s to %s (%d files)", kind, name, folder, len(project.files))
    return Generated(kind, folder, sorted(project.files))


def _onnx_inputs(header: package_pb2.PackageHeader, paths: list[Path]) -> list[Array]:
    """The given files (checked against the package's inputs as the runtime would), else generated inputs."""
    from rkfarm.runtime import InputAdapter

    specs = list(header.inputs)
    if not paths:
        return generated_inputs(header)
    if len(paths) != len(specs):
        names = ", ".join(s.tensor.name for s in specs)
        raise InputError(f"codegen: the model takes {len(specs)} input(s) ({names}); {len(paths)} file(s) given")
    sizes: list[tuple[int, int] | None] = []
    for spec in specs:
        dims = list(spec.tensor.shape)
        nchw = spec.tensor.layout == common_pb2.LAYOUT_NCHW
        sizes.append(((dims[2], dims[3]) if nchw else (dims[1], dims[2])) if len(dims) == 4 else None)
    arrays = read_inputs(paths, sizes)
    try:
        InputAdapter(specs)(arrays)
    except InputError as exc:
        raise InputError(f"codegen: {exc}") from None
    return arrays


def _simulate(package: ModelPackage, arrays: list[Array]) -> list[Array]:
    """The simulator's outputs on the demo's inputs, saved as the demo's expected outputs."""
    from rkfarm.targets import open_simulator
    from rkfarm_proto.records import LoadOptions

    runtime = open_simulator(package, LoadOptions())
    try:
        return runtime.inference(arrays)
    finally:
        runtime.close()


__all__ = ["EXPORT_FOLDER", "MANIFEST", "CodegenError", "Generated", "generate", "safe_name"]
