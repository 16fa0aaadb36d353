"""Generate the Python protobuf/gRPC modules from the project's .proto files.

Two trees hold schemas: proto/rkfarm_proto/**/*.proto (the agent contract) and the Caffe frontend's own schema,
host/rkfarm/frontends/caffe/caffe.proto (messages only, no gRPC). Each is compiled with its tree as the include
root, so the generated module paths (rkfarm_proto.v1.*_pb2, rkfarm.frontends.caffe.caffe_pb2) follow the file
paths. The generated modules are committed (a board installs the agent without grpcio-tools);
tests/test_proto_stubs.py regenerates them into a temporary folder and fails if they are stale.

    python tools/gen_proto.py            # regenerate in place
    python tools/gen_proto.py --out DIR  # generate into DIR/proto/... and DIR/host/... (for the staleness check)
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO / "proto"
SERVICE_FILES = {"agent.proto"}  # files that define gRPC services


@dataclass(frozen=True)
class Tree:
    """A folder that is both protoc's include root and the output root for the files matched by ``pattern``."""

    root: Path
    pattern: str

    def files(self) -> list[Path]:
        return sorted(self.root.glob(self.pattern))


TREES = (
    Tree(PROTO_ROOT, "rkfarm_proto/**/*.proto"),
    Tree(REPO / "host", "rkfarm/frontends/caffe/*.proto"),
)


def proto_files() -> list[Path]:
    return [f for tree in TREES for f in tree.files()]


def generate_tree(tree: Tree, out_dir: Path) -> None:
    from grpc_tools import protoc  # dev-only dependency

    out_dir.mkdir(parents=True, exist_ok=True)
    for proto in tree.files():
        args = [
            "protoc",
            f"-I{tree.root}",
            f"--python_out={out_dir}",
            f"--pyi_out={out_dir}",
        ]
        if proto.name in SERVICE_FILES:
            args.append(f"--grpc_python_out={out_dir}")
        args.append(str(proto))
        if protoc.main(args) != 0:
            raise SystemExit(f"protoc failed on {proto}")


def generate(out: Path | None = None) -> None:
    """Regenerate every tree in place, or (``out`` given) into ``out`` mirroring the repository layout."""
    for tree in TREES:
        generate_tree(tree, tree.root if out is None else out / tree.root.relative_to(REPO))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--out", type=Path, default=None,
        help="output root mirroring the repository (default: regenerate in place)",
    )  # fmt: skip
    args = parser.parse_args()
    generate(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
