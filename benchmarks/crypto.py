"""Decrypt-and-load time per crypt level vs loading the plain package, in the same run.

    python benchmarks/crypto.py [--repeats 7] [--json]

Model: PP-OCRv4 recognition (rapidocr-onnxruntime) built at float32 (a ~10.8 MB payload, like the
10.9 MB source). Two measurements per case, medians over --repeats:
  * in-process: Keyring.decrypt (KDF + AEAD) + opening the ONNX Runtime session, vs the session alone;
  * on an agent (loopback): the Load RPC (read + verify from the store, decrypt, open), plain vs encrypted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _common import median

from rkfarm import RKNN
from rkfarm.keys import make_farm_key
from rkfarm.remote.client import AgentClient
from rkfarm.remote.local import LocalAgent
from rkfarm.zoo import packaged_model
from rkfarm_agent.backends.onnxruntime import OnnxRuntimeBackend
from rkfarm_proto.crypto import Keyring, encrypt_package, read_farm_key
from rkfarm_proto.package import ModelPackage, pack, read_package, sha256_hex
from rkfarm_proto.records import LoadOptions
from rkfarm_proto.v1 import agent_pb2


def build_rec(out: Path) -> Path:
    with RKNN(raise_errors=True) as rknn:
        rknn.config(float_dtype="float32", mean_values=[[127.5] * 3], std_values=[[127.5] * 3])
        rknn.load_onnx(str(packaged_model("ppocr-rec").path()), input_size_list=[[1, 3, 48, 320]])
        rknn.build(do_quantization=False)
        rknn.export_rknn(str(out))
    return out


def timed(fn: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return median(times) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("RKFARM_MDNS_INTERFACES", "127.0.0.1")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="rkfarm-crypto-") as tmp:
        work = Path(tmp)
        plain = read_package(build_rec(work / "rec.rkfm"))
        key_file = make_farm_key(work / "farm.key")
        secret = read_farm_key(key_file)
        keyring = Keyring([secret])
        cases: dict[str, ModelPackage] = {"plain": plain}
        for level in (1, 2, 3):
            cases[f"level {level}"] = encrypt_package(plain, level, secret)
        backend = OnnxRuntimeBackend()
        results["payload_bytes"] = len(plain.payload)
        in_process = {}
        for name, package in cases.items():

            def load(package: ModelPackage = package) -> None:
                backend.load(package.header, keyring.decrypt(package), LoadOptions()).close()

            def decrypt_only(package: ModelPackage = package) -> None:
                keyring.decrypt(package)

            in_process[name] = {
                "decrypt_ms": timed(decrypt_only, args.repeats),
                "decrypt_and_load_ms": timed(load, args.repeats),
            }
        results["in_process"] = in_process
        on_agent = {}
        with (
            LocalAgent(
                work / "agent" / "store", "crypto-bench", "--farm-key-file", str(key_file), advertise=False
            ) as agent,
            AgentClient(agent.address) as client,
        ):
            for name, package in cases.items():
                blob = pack(package.header, package.payload)[1]
                client.ensure_model(blob)
                request = agent_pb2.LoadRequest(model_sha256=sha256_hex(blob))

                def load_rpc(request: agent_pb2.LoadRequest = request) -> None:
                    client.unload(client.load(request).session_id)

                on_agent[name] = {"load_rpc_ms": timed(load_rpc, args.repeats)}
        results["agent_load"] = on_agent
    base = results["in_process"]["plain"]["decrypt_and_load_ms"]
    agent_base = results["agent_load"]["plain"]["load_rpc_ms"]
    for name in cases:
        results["in_process"][name]["vs_plain"] = results["in_process"][name]["decrypt_and_load_ms"] / base
        results["agent_load"][name]["vs_plain"] = results["agent_load"][name]["load_rpc_ms"] / agent_base
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"PP-OCRv4 rec, float32 payload {results['payload_bytes'] / 1e6:.1f} MB, medians of {args.repeats}")
    print(f"{'case':<10}{'decrypt ms':>12}{'decrypt+load ms':>17}{'x plain':>9}{'agent Load ms':>15}{'x plain':>9}")
    for name in cases:
        ip, ag = results["in_process"][name], results["agent_load"][name]
        print(
            f"{name:<10}{ip['decrypt_ms']:>12.1f}{ip['decrypt_and_load_ms']:>17.1f}{ip['vs_plain']:>9.2f}"
            f"{ag['load_rpc_ms']:>15.1f}{ag['vs_plain']:>9.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
