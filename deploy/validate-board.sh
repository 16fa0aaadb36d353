#!/usr/bin/env bash
# Prove the NPU path on a Rockchip board, step by step, ending with one verdict (PASS, FAIL or INCOMPLETE):
#   1. the agent's Python, and `rkfarm-agent doctor` (device tree, rknpu driver node and access, librknnrt)
#   2. librknnrt is found and loads
#   3. the model (a vendor .rknn, or an rkfarm package wrapping one) opens on librknnrt
#   4. it runs on --inputs and its outputs agree with the vendor simulator's (--expected) within the tolerance
#   5. timing (--runs after --warmup) and memory (librknnrt's RKNN_QUERY_MEM_SIZE)
#
#   ./validate-board.sh --model yolov5s.rknn --inputs inputs.npz --expected expected.npz
#   ./validate-board.sh --model cls.rknn --runs 200 --core-mask 7          # no reference: INCOMPLETE at best
#
# inputs.npz / expected.npz: made on the PC by the vendor's simulator on the same model and inputs, e.g.
#   rknn.init_runtime()                                   # no target: RKNN-Toolkit2's simulator
#   outputs = rknn.inference(inputs=[image])
#   np.savez("inputs.npz", image); np.savez("expected.npz", *outputs)   # arrays in input / output order
# (rkfarm's vendor bridge, `rkfarm build --compiler vendor`, makes such a .rknn from rkfarm's calibration.)
#
# Outputs agree when, for every output, max |board - simulator| <= TOLERANCE x max(1, simulator's value range)
# and their cosine similarity >= MIN_COSINE (an int8 NPU and its simulator differ by rounding only).
#
# options:
#   --model FILE          the model to check (required)
#   --inputs FILE.npz     inputs, in the model's input order (default: zeros, for timing only)
#   --expected FILE.npz   the vendor simulator's outputs on --inputs, in output order
#   --tolerance T         default 0.02            --min-cosine C   default 0.999
#   --data-format F       nhwc (default) or nchw: the layout of 4-D --inputs
#   --runs N --warmup N   timed runs (default 50) and untimed ones before (default 5)
#   --core-mask M         NPU cores: 0 auto (default), 1, 2, 4, 3 (0+1), 7 (0+1+2), -1 all
#   --lib FILE            librknnrt.so to use (default: RKFARM_RKNNRT_LIB, the loader path, /usr/lib)
#   --python FILE         the agent's Python (default /opt/rkfarm/venv/bin/python, else python3)
# Exit status: 0 PASS, 1 FAIL, 2 bad arguments, 3 INCOMPLETE (it ran on the NPU but nothing was compared).
set -euo pipefail

MODEL="" INPUTS="" EXPECTED="" TOLERANCE=0.02 MIN_COSINE=0.999 DATA_FORMAT=nhwc RUNS=50 WARMUP=5 CORE_MASK=0
PYTHON=""

usage() { sed -n '2,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; }
bad() { echo "validate-board.sh: $*" >&2; echo "  (validate-board.sh --help lists the options)" >&2; exit 2; }
need_value() { [[ $# -ge 2 && -n "$2" ]] || bad "$1 needs a value"; }
is_number() { [[ "$1" =~ ^[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?$ ]]; }
is_count() { [[ "$1" =~ ^[0-9]+$ ]]; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --model|--inputs|--expected|--tolerance|--min-cosine|--data-format|--runs|--warmup|--core-mask|--lib|--python)
      need_value "$@" ;;&
    --model) MODEL="$2"; shift 2 ;;
    --inputs) INPUTS="$2"; shift 2 ;;
    --expected) EXPECTED="$2"; shift 2 ;;
    --tolerance) TOLERANCE="$2"; shift 2 ;;
    --min-cosine) MIN_COSINE="$2"; shift 2 ;;
    --data-format) DATA_FORMAT="${2,,}"; shift 2 ;;
    --runs) RUNS="$2"; shift 2 ;;
    --warmup) WARMUP="$2"; shift 2 ;;
    --core-mask) CORE_MASK="$2"; shift 2 ;;
    --lib) [[ -f "$2" ]] || bad "--lib $2: no such file"; export RKFARM_RKNNRT_LIB="$(realpath "$2")"; shift 2 ;;
    --python) PYTHON="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) bad "unknown option $1" ;;
  esac
done

[[ -n "$MODEL" ]] || bad "--model FILE is required"
for pair in "--model:$MODEL" "--inputs:$INPUTS" "--expected:$EXPECTED"; do
  flag="${pair%%:*}" file="${pair#*:}"
  [[ -z "$file" || -f "$file" ]] || bad "$flag $file: no such file"
done
[[ -z "$EXPECTED" || -n "$INPUTS" ]] || bad "--expected needs --inputs: the inputs the simulator's outputs come from"
is_number "$TOLERANCE" || bad "--tolerance must be a non-negative number, not '$TOLERANCE'"
is_number "$MIN_COSINE" && awk "BEGIN { exit !($MIN_COSINE <= 1) }" || bad "--min-cosine must be a number <= 1"
[[ "$DATA_FORMAT" == nhwc || "$DATA_FORMAT" == nchw ]] || bad "--data-format must be nhwc or nchw"
is_count "$RUNS" && [[ "$RUNS" -ge 1 ]] || bad "--runs must be a whole number >= 1, not '$RUNS'"
is_count "$WARMUP" || bad "--warmup must be a whole number >= 0, not '$WARMUP'"
[[ "$CORE_MASK" =~ ^(0|1|2|4|3|7|-1)$ ]] || bad "--core-mask must be 0, 1, 2, 4, 3, 7 or -1, not '$CORE_MASK'"

verdict() { echo "VERDICT: $*"; }

if [[ -z "$PYTHON" ]]; then
  if [[ -x /opt/rkfarm/venv/bin/python ]]; then PYTHON=/opt/rkfarm/venv/bin/python; else PYTHON=python3; fi
fi
echo "==> 1. the agent"
if ! "$PYTHON" -c 'import rkfarm_agent' 2>/dev/null; then
  echo "FAIL  agent         $PYTHON cannot import rkfarm_agent -> install it (deploy/install-agent.sh) or give --python"
  verdict "FAIL (no agent install)"
  exit 1
fi
"$PYTHON" -m rkfarm_agent.cli doctor || true  # its findings are shown; the steps below decide

echo "==> 2-5. librknnrt, the model, outputs, timing and memory"
set +e
"$PYTHON" - "$MODEL" "$INPUTS" "$EXPECTED" "$TOLERANCE" "$MIN_COSINE" "$DATA_FORMAT" "$RUNS" "$WARMUP" "$CORE_MASK" <<'PY'
import sys

import numpy as np

model_path, inputs_path, expected_path = sys.argv[1:4]
tolerance, min_cosine, data_format = float(sys.argv[4]), float(sys.argv[5]), sys.argv[6]
runs, warmup, core_mask = int(sys.argv[7]), int(sys.argv[8]), int(sys.argv[9])


def line(status: str, name: str, detail: str) -> None:
    print(f"{status:<6}{name:<14}{detail}", flush=True)


def fail(name: str, detail: str, why: str) -> None:
    line("FAIL", name, detail)
    print(f"VERDICT: FAIL ({why})")
    sys.exit(11)


def arrays(path: str) -> list[np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return [npz[name] for name in npz.files]  # in the order they were saved


from rkfarm_agent import doctor, system  # noqa: E402

facts = system.board_facts()
if not facts.librknnrt_path:
    fail("librknnrt", f"{facts.librknnrt_error or 'librknnrt.so not found'} -> {doctor.LIBRKNNRT_FIX}",
         "librknnrt not found")
if facts.librknnrt_error:
    fail("librknnrt", f"{facts.librknnrt_path} does not load: {facts.librknnrt_error}", "librknnrt does not load")
line("ok", "librknnrt", f"{facts.librknnrt_path} {facts.librknnrt_version}".strip())

import time  # noqa: E402

from rkfarm_agent.lite.models import KeyOptions, open_model, read_model  # noqa: E402
from rkfarm_agent.perf import dummy_feeds, time_runs  # noqa: E402
from rkfarm_proto.errors import RkfarmError  # noqa: E402
from rkfarm_proto.records import LoadOptions  # noqa: E402

try:
    start = time.perf_counter()
    opened = open_model(read_model(model_path), LoadOptions(core_mask=core_mask), KeyOptions.resolve())
    load_ms = (time.perf_counter() - start) * 1e3
except (RkfarmError, OSError, ValueError) as exc:
    fail("model", f"{model_path}: {' '.join(str(exc).split())}", "the model does not open")
if opened.backend.name != "rknnrt":
    fail("model", f"{model_path} runs on {opened.backend.name} (the CPU), not librknnrt -> give a vendor .rknn "
         "(RKNN-Toolkit2's, or `rkfarm build --compiler vendor`)", "not an NPU model")
line("ok", "model", f"{model_path} opened on librknnrt in {load_ms:.1f} ms ({opened.backend.version()})")

try:
    if inputs_path:
        feeds = opened.adapter(arrays(inputs_path), data_format, None)
    else:
        feeds = dummy_feeds(opened.header)
    outputs = opened.model.run(feeds)
except (RkfarmError, OSError, ValueError) as exc:
    fail("run", " ".join(str(exc).split()), "the model does not run")
shapes = ", ".join(str(list(o.shape)) for o in outputs)
line("ok", "run", f"{len(outputs)} output(s): {shapes}" + ("" if inputs_path else " (zero inputs)"))

compared = False
if expected_path:
    want = arrays(expected_path)
    if len(want) != len(outputs):
        fail("outputs", f"the model has {len(outputs)} output(s), {expected_path} holds {len(want)}",
             "outputs do not match the simulator's")
    for index, (got, ref) in enumerate(zip(outputs, want)):
        got64, ref64 = np.asarray(got, np.float64), np.asarray(ref, np.float64)
        if got64.size != ref64.size:
            fail("outputs", f"output {index}: {list(got64.shape)} on the board, {list(ref64.shape)} expected",
                 "outputs do not match the simulator's")
        got64, ref64 = got64.ravel(), ref64.ravel()
        diff = float(np.max(np.abs(got64 - ref64))) if got64.size else 0.0
        span = float(ref64.max() - ref64.min()) if ref64.size else 0.0
        bound = tolerance * max(1.0, span)
        norm = float(np.linalg.norm(got64) * np.linalg.norm(ref64))
        cosine = float(got64 @ ref64 / norm) if norm > 0 else (1.0 if diff == 0 else 0.0)
        detail = (f"output {index}: max |diff| {diff:.4g} (limit {tolerance:g} x max(1, range {span:.4g}) = "
                  f"{bound:.4g}), cosine {cosine:.6f} (limit {min_cosine:g})")
        if diff > bound or cosine < min_cosine:
            fail("outputs", detail, "outputs disagree with the simulator's")
        line("ok", "outputs", detail)
    compared = True

times = np.asarray(time_runs(opened.model, feeds, runs, warmup))
line("ok", "timing", f"{len(times)} runs after {warmup} warm-up: mean {times.mean() / 1e3:.3f} ms, "
     f"min {times.min() / 1e3:.3f} ms, p90 {np.percentile(times, 90) / 1e3:.3f} ms, {1e6 / times.mean():.1f} FPS")
memory = opened.model.memory()
mib = 1024 * 1024
line("ok", "memory", f"weights {memory.weight_bytes / mib:.2f} MiB, internal {memory.internal_bytes / mib:.2f} MiB, "
     f"other {memory.other_bytes / mib:.2f} MiB, total {memory.total_bytes / mib:.2f} MiB ({memory.method})")
opened.close()
usable = [n.path for n in facts.npu_nodes if n.accessible]
if not usable:  # a real librknnrt cannot run without the driver: this one is a stub, or the node is hidden
    closed = ", ".join(n.path for n in facts.npu_nodes)
    fail("npu device", f"librknnrt ran, but {'this user cannot open ' + closed if closed else 'no rknpu device node exists'}"
         " -> see `rkfarm-agent doctor` above", "the NPU device is missing")
line("ok", "npu device", ", ".join(usable))
if compared:
    print("VERDICT: PASS (the model runs on the NPU through librknnrt and agrees with the simulator)")
    sys.exit(0)
print("VERDICT: INCOMPLETE (the model runs on the NPU through librknnrt; give --inputs and --expected to compare "
      "its outputs with the simulator's)")
sys.exit(13)
PY
code=$?
set -e
case $code in  # the check's own codes: 0 PASS, 11 FAIL, 13 INCOMPLETE (each printed its verdict)
  0) exit 0 ;;
  11) exit 1 ;;
  13) exit 3 ;;
  *) verdict "FAIL (the check itself stopped with status $code; see above)"; exit 1 ;;
esac
