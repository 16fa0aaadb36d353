"""The committed protobuf modules are exactly what the .proto files generate."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_generated_modules_are_fresh(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(ROOT / "tools" / "gen_proto.py"), "--out", str(tmp_path)], check=True)
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert generated, "nothing generated"
    for rel in generated:
        committed = ROOT / rel
        assert committed.exists(), f"{rel} is generated but not committed: run `make proto`"
        assert committed.read_text() == (tmp_path / rel).read_text(), f"{rel} is stale: run `make proto`"
    # every schema tree is covered: the agent contract and the Caffe frontend's own schema
    for expected in (
        Path("proto/rkfarm_proto/v1/agent_pb2.py"),
        Path("proto/rkfarm_proto/v1/agent_pb2_grpc.py"),
        Path("host/rkfarm/frontends/caffe/caffe_pb2.py"),
        Path("host/rkfarm/frontends/caffe/caffe_pb2.pyi"),
    ):
        assert expected in generated, f"{expected} is not generated"
    assert not any(p.name.startswith("caffe_pb2_grpc") for p in generated), "the Caffe schema has no services"
