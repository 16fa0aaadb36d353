"""Custom operators inside ONNX Runtime: Python classes with the vendor's interface, run as
onnxruntime-extensions Python ops.

A custom op is an object with ``op_type`` and ``compute(node, inputs) -> list of arrays`` (and, for a
non-standard ``cst*`` type, ``shape_infer(node, in_shapes, in_dtypes) -> (out_shapes, out_dtypes)``, which the
host uses when it builds). Implementations come from two places only: the host process's own
``RKNN.reg_custom_op()`` calls, and, on a board, Python modules installed there and named by whoever starts the
agent (``rkfarm-agent serve --custom-ops mypkg.ops``). A client never sends code: a package only names the op
types it needs, and an agent that lacks one refuses to load it.

Running one: every node of ``CUSTOM_OP_DOMAIN`` in the payload is rewritten, in a copy made for the session,
to a Python op of onnxruntime-extensions with a name of its own, bound to that node (its attributes) and to the
element types the payload records for its inputs and outputs. The implementation is called with the ONNX node
(an ``onnx.NodeProto`` when the ``onnx`` package is installed, otherwise a message with the same fields) and
the input arrays; what it returns is checked (count) and cast to the declared output types.
"""

from __future__ import annotations

import importlib
import json
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from rkfarm_agent.errors import BackendError
from rkfarm_proto.custom_ops import CUSTOM_OP_DOMAIN, IO_TYPES_KEY, is_nonstandard
from rkfarm_proto.v1 import onnx_subset_pb2 as ox

log = logging.getLogger(__name__)

PYOP_DOMAIN = "ai.onnx.contrib"  # where onnxruntime-extensions looks for its Python ops
PYOP_PREFIX = "RkfarmPyOp"
# ONNX TensorProto element types -> numpy dtypes (what a Python op can take and return)
ELEM_DTYPES: dict[int, Any] = {
    1: np.float32, 2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16, 6: np.int32, 7: np.int64,
    9: np.bool_, 10: np.float16, 11: np.float64, 12: np.uint32, 13: np.uint64,
}  # fmt: skip
# the element types a custom op may take and give (one type for all inputs, one for all outputs)
PYOP_TYPES = {
    1: "dt_float", 2: "dt_uint8", 3: "dt_int8", 6: "dt_int32", 7: "dt_int64", 9: "dt_bool", 10: "dt_float16",
    11: "dt_double",
}  # fmt: skip
MAX_PYOP_INPUTS, MAX_PYOP_OUTPUTS = 6, 4
BIND_ATTRIBUTE = "rkfarm_bind"  # the node attribute a pool op dispatches on


class CustomOpError(BackendError):
    """A custom-op class that does not have the interface, or one that misbehaved while running."""


class MissingCustomOpError(BackendError):
    """The package needs a custom op this process has no implementation for."""


_lock = threading.Lock()
_registry: dict[str, Any] = {}
_bound: dict[tuple[int, bytes, tuple[int, ...], tuple[int, ...]], str] = {}  # (impl, node, types) -> binding
_bindings: dict[str, Callable[..., Any]] = {}  # binding -> the function running that node
_pool_registered: list[bool] = []  # [True] once the pool is registered


def check_op(op: Any) -> Any:
    """The op object if it has the vendor's interface (a class is instantiated); CustomOpError otherwise."""
    if isinstance(op, type):
        op = op()
    what = type(op).__name__
    op_type = getattr(op, "op_type", None)
    if not isinstance(op_type, str) or not op_type:
        raise CustomOpError(f"custom op class {what} has no op_type (a non-empty str, e.g. op_type = 'cstSigmoid')")
    if not callable(getattr(op, "compute", None)):
        raise CustomOpError(f"custom op {op_type} ({what}) has no compute(self, node, inputs) method")
    if is_nonstandard(op_type) and not callable(getattr(op, "shape_infer", None)):
        raise CustomOpError(
            f"custom op {op_type} ({what}) has no shape_infer(self, node, in_shapes, in_dtypes) method: a 'cst' "
            "op is not an ONNX op, so its output shapes must come from it"
        )
    return op


def register(op: Any) -> str:
    """Make ``op`` the implementation of its op type in this process; returns the op type."""
    op = check_op(op)
    with _lock:
        previous = _registry.get(op.op_type)
        if previous is not None and type(previous) is not type(op):
            log.warning("custom op %s: %s replaces %s", op.op_type, type(op).__name__, type(previous).__name__)
        _registry[op.op_type] = op
    return str(op.op_type)


def registered() -> dict[str, Any]:
    """The op types this process can run, with their implementations."""
    with _lock:
        return dict(_registry)


def load_modules(names: Sequence[str]) -> list[str]:
    """Import installed modules by name and register every custom-op class each defines; the op types."""
    found: list[str] = []
    for name in names:
        try:
            module = importlib.import_module(name)
        except Exception as exc:  # the module's own import error, whatever it is
            raise CustomOpError(f"--custom-ops {name}: cannot import it: {type(exc).__name__}: {exc}") from None
        classes = [
            value for value in vars(module).values()
            if isinstance(value, type) and value.__module__ == module.__name__ and hasattr(value, "op_type")
        ]  # fmt: skip
        if not classes:
            raise CustomOpError(f"--custom-ops {name}: the module defines no class with an op_type")
        found.extend(register(cls) for cls in classes)
    return found


def require(op_types: Sequence[str]) -> None:
    """MissingCustomOpError naming every op type in ``op_types`` that has no implementation here."""
    have = registered()
    missing = [t for t in op_types if t not in have]
    if missing:
        raise MissingCustomOpError(
            f"the model needs custom op(s) {', '.join(missing)}, which this runtime does not have "
            "(on the host: reg_custom_op(); on a board: rkfarm-agent serve --custom-ops MODULE)"
        )


def has_custom_nodes(model: bytes) -> bool:
    """Cheap pre-check: the domain name appears in the serialized model."""
    return CUSTOM_OP_DOMAIN.encode() in model


def bind(model: bytes) -> bytes:
    """A copy of ``model`` whose custom nodes are Python ops bound to their implementations."""
    parsed = ox.Model.FromString(model)
    graph = parsed.graph
    nodes = [n for n in graph.node if n.domain == CUSTOM_OP_DOMAIN]
    if not nodes:
        return model
    require(list(dict.fromkeys(n.op_type for n in nodes)))
    elem = _element_types(parsed)
    for node in nodes:
        ins = tuple(elem.get(t, 0) for t in node.input)
        outs = tuple(elem.get(t, 0) for t in node.output)
        unknown = [t for t, e in zip([*node.input, *node.output], ins + outs) if e not in ELEM_DTYPES]
        if unknown:
            raise BackendError(
                f"custom op node {node.name or node.op_type}: the payload records no element type for {unknown}"
            )
        op_type, binding = _pyop(node, ins, outs)
        node.op_type, node.domain = op_type, PYOP_DOMAIN
        node.attribute.add(name=BIND_ATTRIBUTE, s=binding.encode(), type=3)  # AttributeProto.STRING
    if not any(o.domain == PYOP_DOMAIN for o in parsed.opset_import):
        parsed.opset_import.add(domain=PYOP_DOMAIN, version=1)
    return parsed.SerializeToString()


def library_path() -> str:
    """onnxruntime-extensions' shared library, which the session registers to run Python ops."""
    try:
        from onnxruntime_extensions import get_library_path
    except ImportError:
        raise BackendError(
            "this model has custom ops, which need onnxruntime-extensions: pip install onnxruntime-extensions"
        ) from None
    return str(get_library_path())


def _element_types(model: ox.Model) -> dict[str, int]:
    """Element types by tensor name: what the build recorded for the custom nodes, then the graph's own."""
    graph = model.graph
    types: dict[str, int] = {}
    for entry in model.metadata_props:
        if entry.key == IO_TYPES_KEY:
            try:
                types.update({str(k): int(v) for k, v in json.loads(entry.value).items()})
            except (ValueError, TypeError, AttributeError):
                raise BackendError(f"the payload's {IO_TYPES_KEY} metadata is not a JSON object of types") from None
    types.update({t.name: t.data_type for t in graph.initializer})
    for value in (*graph.input, *graph.output, *graph.value_info):
        if value.type.tensor_type.elem_type:
            types[value.name] = value.type.tensor_type.elem_type
    return types


def _pyop(node: ox.Node, ins: tuple[int, ...], outs: tuple[int, ...]) -> tuple[str, str]:
    """The pool op and the binding key that run ``node`` with its registered implementation."""
    what = f"custom op {node.op_type} (node {node.name or node.output[0]!r})"
    if len(set(ins)) > 1 or len(set(outs)) > 1:
        raise CustomOpError(f"{what}: inputs, or outputs, of different element types are not supported")
    if not ins or len(ins) > MAX_PYOP_INPUTS or not outs or len(outs) > MAX_PYOP_OUTPUTS:
        raise CustomOpError(
            f"{what}: {len(ins)} inputs and {len(outs)} outputs; a custom op takes 1 to {MAX_PYOP_INPUTS} inputs "
            f"and gives 1 to {MAX_PYOP_OUTPUTS} outputs"
        )
    if ins[0] not in PYOP_TYPES or outs[0] not in PYOP_TYPES:
        names = ", ".join(np.dtype(ELEM_DTYPES[e]).name for e in sorted(PYOP_TYPES))
        raise CustomOpError(f"{what}: element types must be one of {names}")
    impl = registered()[node.op_type]
    key = (id(impl), node.SerializeToString(), ins, outs)
    with _lock:
        _register_pool()
        binding = _bound.get(key)
        if binding is None:
            binding = str(len(_bindings) + 1)
            _bound[key] = binding
            _bindings[binding] = _compute(impl, _node_for_user(node), [ELEM_DTYPES[e] for e in outs])
    return _pool_name(ins[0], len(ins), outs[0], len(outs)), binding


def _pool_name(in_elem: int, n_in: int, out_elem: int, n_out: int) -> str:
    return f"{PYOP_PREFIX}_{in_elem}x{n_in}_{out_elem}x{n_out}"


def _register_pool() -> None:
    """Every Python op signature rkfarm uses, registered once, before the first session that runs one.

    onnxruntime-extensions keeps its Python ops in a table that existing sessions point into; an op added after
    a session was made can leave that session with dangling pointers (a crash, seen here). So no op is ever
    added later: one op per (element type, input count, element type, output count), each dispatching on the
    node's ``rkfarm_bind`` attribute to the implementation bound to that node."""
    if _pool_registered:
        return
    from onnxruntime_extensions import PyCustomOpDef, onnx_op

    def dispatch(*inputs: np.ndarray[Any, Any], rkfarm_bind: str) -> Any:
        run = _bindings.get(rkfarm_bind)
        if run is None:  # cannot happen for a node bind() rewrote; never raise into C++ (it aborts)
            _failures.errors = [*getattr(_failures, "errors", []), f"no custom op bound as {rkfarm_bind!r}"]
            return inputs[0]
        return run(*inputs)

    attrs = {BIND_ATTRIBUTE: PyCustomOpDef.dt_string}
    for a, a_code in PYOP_TYPES.items():
        for b, b_code in PYOP_TYPES.items():
            for n_in in range(1, MAX_PYOP_INPUTS + 1):
                for n_out in range(1, MAX_PYOP_OUTPUTS + 1):
                    onnx_op(
                        op_type=_pool_name(a, n_in, b, n_out), inputs=[getattr(PyCustomOpDef, a_code)] * n_in,
                        outputs=[getattr(PyCustomOpDef, b_code)] * n_out, attrs=attrs,
                    )(dispatch)  # fmt: skip
    _pool_registered.append(True)


def _node_for_user(node: ox.Node) -> Any:
    """What compute() receives: an onnx.NodeProto where the onnx package exists (as the vendor passes)."""
    try:
        import onnx
    except ImportError:
        return node
    return onnx.NodeProto.FromString(node.SerializeToString())


def _compute(impl: Any, node: Any, out_dtypes: list[Any]) -> Callable[..., Any]:
    """The function onnxruntime-extensions calls. An exception escaping it would abort the process (it crosses
    C++ uncaught), so a failure is recorded for the calling thread, placeholder outputs go back to ONNX Runtime,
    and ``CheckedSession.run`` raises it when the run returns: the outputs of that run are never seen."""
    op_type = impl.op_type

    def outputs_of(inputs: list[np.ndarray[Any, Any]]) -> list[np.ndarray[Any, Any]]:
        result = impl.compute(node, inputs)
        if isinstance(result, np.ndarray):
            result = [result]
        result = list(result)
        if len(result) != len(out_dtypes):
            raise CustomOpError(
                f"custom op {op_type}: compute() returned {len(result)} output(s), the node has {len(out_dtypes)}"
            )
        return [np.ascontiguousarray(np.asarray(r, dtype=d)) for r, d in zip(result, out_dtypes)]

    def run(*inputs: np.ndarray[Any, Any]) -> Any:
        # The user's code gets copies: the arrays onnxruntime-extensions passes may view ONNX Runtime's buffers,
        # which are freed after the run while an array kept by the user (or by a traceback) would still point there.
        owned = [np.array(x, copy=True) for x in inputs]
        message = None
        try:
            arrays = outputs_of(owned)
        except Exception as exc:  # the user's code: anything it raises becomes this run's error
            message = str(exc) if isinstance(exc, CustomOpError) else f"{type(exc).__name__}: {exc}"
            exc.__traceback__ = None  # frames hold the run's arrays; let them go now
        if message is not None:
            _failures.errors = [*getattr(_failures, "errors", []), message]
            shape = owned[0].shape if owned else (0,)
            arrays = [np.zeros(shape, dtype=d) for d in out_dtypes]
        return arrays[0] if len(arrays) == 1 else tuple(arrays)

    return run


_failures = threading.local()  # the current thread's custom-op failures during the run in progress


class CheckedSession:
    """An ONNX Runtime session whose ``run`` raises CustomOpError when a custom op failed during that run."""

    def __init__(self, session: Any) -> None:
        self._session = session

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)

    def run(self, *args: Any, **kwargs: Any) -> Any:
        _failures.errors = []
        try:
            outputs = self._session.run(*args, **kwargs)
        finally:
            errors, _failures.errors = getattr(_failures, "errors", []), []
        if errors:
            raise CustomOpError(errors[0] if errors[0].startswith("custom op") else f"custom op failed: {errors[0]}")
        return outputs


def get_node_attr(node: Any, name: str) -> Any:
    """The value of attribute ``name`` of a node, for board-side modules (``onnx`` need not be installed): int,
    float, str, or a list for ints/floats/strings; serialized bytes for tensor and graph attributes."""
    for attr in node.attribute:
        if attr.name != name:
            continue
        kind = attr.type
        values: dict[int, Any] = {
            1: attr.f, 2: attr.i, 3: attr.s.decode("utf-8"), 6: list(attr.floats), 7: list(attr.ints),
            8: list(attr.strings),
        }  # fmt: skip
        if kind in values:
            return values[kind]
        return attr.t if kind == 4 else attr.g if kind == 5 else None
    return None
