"""Generate the Python protobuf/gRPC modules from proto/rkfarm_proto/**/*.proto.

The generated modules are committed (a board installs the agent without grpcio-tools);
tests/test_proto_stubs.py regenerates them into a temporary folder and fails if they are stale.

    python tools/gen_proto.py            # regenerate in place
    python tools/gen_proto.py --out DIR  # generate into DIR (for the staleness check)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent.parent / "proto"
SERVICE_FILES = {"agent.proto"}  # files that define gRPC services


def proto_files() -> list[Path]:
    return sorted(PROTO_ROOT.glob("rkfarm_proto/**/*.proto"))


def generate(out_dir: Path) -> None:
    from grpc_tools import protoc  # dev-only dependency

    for proto in proto_files():
        args = [
            "protoc",
            f"-I{PROTO_ROOT}",
            f"--python_out={out_dir}",
            f"--pyi_out={out_dir}",
        ]
        if proto.name in SERVICE_FILES:
            args.append(f"--grpc_python_out={out_dir}")
        args.append(str(proto))
        if protoc.main(args) != 0:
            raise SystemExit(f"protoc failed on {proto}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=PROTO_ROOT, help="output root (default: proto/)")
    args = parser.parse_args()
    generate(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
