"""rkfarm.utils.onnx_edit: re-shaped inputs/outputs compute the same function, on real ONNX Runtime.

Expected layouts are written out by hand with numpy (not with the module's own helpers), so a wrong
permutation or split in the implementation fails here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx_models import make_model
from PIL import Image

from rkfarm.config import RknnConfig
from rkfarm.errors import DatasetError
from rkfarm.quant.dataset import CalibrationDataset
from rkfarm.specs import input_specs
from rkfarm.utils import OnnxEditError, onnx_edit

Array = npt.NDArray[np.float32]
Shape = list[int | str]
rng = np.random.default_rng(0)


def save(path: Path, graph: onnx.GraphProto) -> Path:
    model = make_model(graph, 13)
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def mul_model(path: Path, shape: Shape) -> Path:
    """y = x * w with w of x's shape (so the layout of x matters), and an untouched second input s -> z."""
    static = [d if isinstance(d, int) else 1 for d in shape]
    w = numpy_helper.from_array(rng.standard_normal(static).astype(np.float32), "w")
    nodes = [helper.make_node("Mul", ["x", "w"], ["y"]), helper.make_node("Neg", ["s"], ["z"])]
    ins = [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)]
    ins.append(helper.make_tensor_value_info("s", TensorProto.FLOAT, [2, 3]))
    outs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)]
    outs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 3]))
    return save(path, helper.make_graph(nodes, "mul", ins, outs, [w]))


def concat_block(path: Path) -> Path:
    """The vendor's example: k_cache.1 [4,48,1,8] and k_new concatenated, transposed into k_cache [4,16,48,1]."""
    ins = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [4, 48, 1, 8]) for n in ("k_cache.1", "k_new")]
    out = helper.make_tensor_value_info("k_cache", TensorProto.FLOAT, [4, 16, 48, 1])
    nodes = [
        helper.make_node("Concat", ["k_cache.1", "k_new"], ["cat"], axis=3),
        helper.make_node("Transpose", ["cat"], ["k_cache"], perm=[0, 3, 1, 2]),
    ]
    return save(path, helper.make_graph(nodes, "concat_block", ins, [out]))


def run(path: Path, feeds: dict[str, Array]) -> list[Array]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return list(session.run(None, feeds))


def io_shapes(path: Path) -> tuple[dict[str, Shape], dict[str, Shape]]:
    g = onnx.load(path).graph

    def dims(v: onnx.ValueInfoProto) -> Shape:
        return [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]

    return {v.name: dims(v) for v in g.input}, {v.name: dims(v) for v in g.output}


def op_types(path: Path) -> list[str]:
    return [n.op_type for n in onnx.load(path).graph.node]


# (equation, original shape, the new layout written by hand)
EXAMPLES: list[tuple[str, list[int], Callable[[Array], Array]]] = [
    ("a,b,c->a,b,1,c", [4, 6, 5], lambda x: x.reshape(4, 6, 1, 5)),
    ("a,b,c->a,1,b,c", [4, 6, 5], lambda x: x.reshape(4, 1, 6, 5)),
    ("a,b,c,d,e->ab,c,d,e", [2, 3, 4, 5, 6], lambda x: x.reshape(6, 4, 5, 6)),
    ("a,b,c,d->a,d,b,c", [4, 48, 1, 8], lambda x: x.transpose(0, 3, 1, 2)),
    ("a,b,c,d->ad,c,b", [4, 48, 1, 8], lambda x: x.transpose(0, 3, 2, 1).reshape(32, 1, 48)),
    ("a,b,c,d->d,acb,1", [4, 48, 1, 8], lambda x: x.transpose(3, 0, 2, 1).reshape(8, 192, 1)),
    ("a,b,c,d->1,ad,b,c", [4, 48, 1, 8], lambda x: x.transpose(0, 3, 1, 2).reshape(1, 32, 48, 1)),
    (
        "a,bc,de,f[b=2,d=4]->ab,fe,dc,1",
        [8, 48, 16, 5],
        lambda x: x.reshape(8, 2, 24, 4, 4, 5).transpose(0, 1, 5, 4, 3, 2).reshape(16, 20, 96, 1),
    ),
    (
        "a,bc,de,f[b=2,c=24,d=4]->ab,fe,dc,1",
        [8, 48, 16, 5],
        lambda x: x.reshape(8, 2, 24, 4, 4, 5).transpose(0, 1, 5, 4, 3, 2).reshape(16, 20, 96, 1),
    ),
    (
        "ab,c,d,qk[a=2,k=8]->aq,cd,1,kb",
        [32, 4, 1, 64],
        lambda x: x.reshape(2, 16, 4, 1, 8, 8).transpose(0, 4, 2, 3, 5, 1).reshape(16, 4, 1, 128),
    ),
    ("a,b,1,d->a,b,d", [32, 4, 1, 64], lambda x: x.reshape(32, 4, 64)),
    ("a,b,1,d->d,1,a,b", [32, 4, 1, 64], lambda x: x.transpose(3, 2, 0, 1)),
]


@pytest.mark.parametrize(("equation", "shape", "relayout"), EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_input_transform_keeps_the_function(
    tmp_path: Path, equation: str, shape: list[int], relayout: Callable[[Array], Array]
) -> None:
    model = mul_model(tmp_path / "m.onnx", list(shape))
    assert onnx_edit(str(model), str(tmp_path / "e.onnx"), inputs_transform={"x": equation}) == 0
    x, s = rng.standard_normal(shape).astype(np.float32), rng.standard_normal([2, 3]).astype(np.float32)
    new_x = relayout(x)
    assert io_shapes(tmp_path / "e.onnx")[0] == {"x": list(new_x.shape), "s": [2, 3]}
    edited, original = run(tmp_path / "e.onnx", {"x": new_x, "s": s}), run(model, {"x": x, "s": s})
    np.testing.assert_array_equal(edited[0], original[0])
    np.testing.assert_array_equal(edited[1], original[1])


@pytest.mark.parametrize(("equation", "shape", "relayout"), EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_output_transform_gives_the_new_layout(
    tmp_path: Path, equation: str, shape: list[int], relayout: Callable[[Array], Array]
) -> None:
    model = mul_model(tmp_path / "m.onnx", list(shape))
    assert onnx_edit(model, tmp_path / "e.onnx", outputs_transform={"y": equation}) == 0
    feeds = {"x": rng.standard_normal(shape).astype(np.float32), "s": rng.standard_normal([2, 3]).astype(np.float32)}
    want = relayout(run(model, feeds)[0])
    got = run(tmp_path / "e.onnx", feeds)[0]
    assert io_shapes(tmp_path / "e.onnx")[1]["y"] == list(want.shape)
    np.testing.assert_array_equal(got, want)


def test_vendor_concat_block_example(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model = concat_block(tmp_path / "concat_block.onnx")
    out = tmp_path / "concat_block_edited.onnx"
    with caplog.at_level(logging.INFO, logger="rkfarm.utils.onnx_edit"):
        ret = onnx_edit(
            str(model),
            str(out),
            inputs_transform={"k_cache.1": "a,b,c,d->1,ad,b,c"},
            outputs_transform={"k_cache": "a,b,c,d->1,ab,c,d"},
        )
    assert ret == 0
    assert io_shapes(out) == ({"k_cache.1": [1, 32, 48, 1], "k_new": [4, 48, 1, 8]}, {"k_cache": [1, 64, 48, 1]})
    assert op_types(out) == ["Reshape", "Transpose", "Concat", "Transpose", "Reshape"]
    said = [r.getMessage() for r in caplog.records if r.name == "rkfarm.utils.onnx_edit"]
    line = next(m for m in said if "'k_cache.1'" in m)
    for part in ("[1, 32, 48, 1]", "[4, 48, 1, 8]", "Reshape [1, 32, 48, 1] to [4, 8, 48, 1]", "(0, 2, 3, 1)"):
        assert part in line
    a, b = (rng.standard_normal([4, 48, 1, 8]).astype(np.float32) for _ in range(2))
    want = run(model, {"k_cache.1": a, "k_new": b})[0].reshape(1, 64, 48, 1)
    got = run(out, {"k_cache.1": a.transpose(0, 3, 1, 2).reshape(1, 32, 48, 1), "k_new": b})[0]
    np.testing.assert_array_equal(got, want)


def test_only_needed_ops(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model = mul_model(tmp_path / "m.onnx", [4, 48, 1, 8])
    onnx_edit(model, tmp_path / "t.onnx", {"x": "a,b,c,d->a,d,b,c"})
    assert op_types(tmp_path / "t.onnx") == ["Transpose", "Mul", "Neg"]  # a pure permutation: no Reshape
    onnx_edit(model, tmp_path / "r.onnx", {"x": "a,b,c,d->ab,c,d"})
    assert op_types(tmp_path / "r.onnx") == ["Reshape", "Mul", "Neg"]
    onnx_edit(model, tmp_path / "one.onnx", {"x": "a,b,c,d->a,b,d,c"})  # moves only the size-1 dim: a Reshape
    assert op_types(tmp_path / "one.onnx") == ["Reshape", "Mul", "Neg"]
    with caplog.at_level(logging.WARNING, logger="rkfarm.utils.onnx_edit"):
        assert onnx_edit(model, tmp_path / "same.onnx", {"x": "a,b,c,d->a,b,c,d"}) == 0
    assert op_types(tmp_path / "same.onnx") == ["Mul", "Neg"]
    assert any("nothing to do" in r.getMessage() for r in caplog.records)


def test_output_read_inside_the_graph_and_inputs_read_by_subgraphs(tmp_path: Path) -> None:
    """y is an output and also feeds z; x is read inside an If body: both keep their original meaning."""

    def branch(op: str, out: str) -> onnx.GraphProto:
        value = helper.make_tensor_value_info(out, TensorProto.FLOAT, [2, 3, 4])
        return helper.make_graph([helper.make_node(op, ["x"], [out])], op, [], [value])

    body, other = branch("Relu", "t"), branch("Neg", "e")
    cond = numpy_helper.from_array(np.array(True), "cond")
    nodes = [
        helper.make_node("If", ["cond"], ["r"], then_branch=body, else_branch=other),
        helper.make_node("Add", ["r", "x"], ["y"]),
        helper.make_node("Exp", ["y"], ["z"]),
    ]
    ins = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])]
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 3, 4]) for n in ("y", "z")]
    model = save(tmp_path / "if.onnx", helper.make_graph(nodes, "if", ins, outs, [cond]))
    assert onnx_edit(model, tmp_path / "e.onnx", {"x": "a,b,c->c,a,b"}, {"y": "a,b,c->b,ac"}) == 0
    x = rng.standard_normal([2, 3, 4]).astype(np.float32)
    y, z = run(model, {"x": x})
    got_y, got_z = run(tmp_path / "e.onnx", {"x": x.transpose(2, 0, 1)})
    np.testing.assert_array_equal(got_y, y.transpose(1, 0, 2).reshape(3, 8))
    np.testing.assert_array_equal(got_z, z)


DYN: Shape = ["N", 48, "T", 8]


@pytest.mark.parametrize(
    ("equation", "new_shape", "relayout"),
    [
        ("a,b,c,d->a,b,1,c,d", ["N", 48, 1, "T", 8], lambda x: x[:, :, None]),
        ("a,b,c,d->1,a,b,c,d", [1, "N", 48, "T", 8], lambda x: x[None]),  # both dynamic dims move: run-time shape
        ("a,b,c,d->a,bc,d", ["N", "48*T", 8], lambda x: x.reshape(x.shape[0], -1, 8)),
        ("a,b,c,d->c,1,b,a,d", ["T", 1, 48, "N", 8], lambda x: x.transpose(2, 1, 0, 3)[:, None]),
        ("ab,c,d,e[a=3]->a,b,c,d,e", [3, "N/3", 48, "T", 8], lambda x: x.reshape(3, -1, *x.shape[1:])),
        (
            "a,b,cd,e[c=5]->d,b,a,c,e",
            ["T/5", 48, "N", 5, 8],
            lambda x: x.reshape(x.shape[0], 48, 5, -1, 8).transpose(3, 1, 0, 2, 4),
        ),
    ],
)
def test_dynamic_input_dims(
    tmp_path: Path, equation: str, new_shape: Shape, relayout: Callable[[Array], Array]
) -> None:
    model = mul_model(tmp_path / "m.onnx", DYN)
    assert onnx_edit(model, tmp_path / "e.onnx", {"x": equation}) == 0
    assert io_shapes(tmp_path / "e.onnx")[0]["x"] == new_shape
    s = np.zeros([2, 3], np.float32)
    for n, t in ((3, 10), (6, 5)):  # two sizes: the inserted ops follow the run-time shape
        x = rng.standard_normal([n, 48, t, 8]).astype(np.float32)
        want = run(model, {"x": x, "s": s})[0]
        np.testing.assert_array_equal(run(tmp_path / "e.onnx", {"x": relayout(x), "s": s})[0], want)


def test_dynamic_output_dims_may_merge(tmp_path: Path) -> None:
    model = mul_model(tmp_path / "m.onnx", DYN)
    onnx_edit(model, tmp_path / "e.onnx", outputs_transform={"y": "a,b,c,d->ca,1,db"})
    assert io_shapes(tmp_path / "e.onnx")[1]["y"] == ["T*N", 1, 384]
    x, s = rng.standard_normal([3, 48, 10, 8]).astype(np.float32), np.zeros([2, 3], np.float32)
    want = run(model, {"x": x, "s": s})[0].transpose(2, 0, 3, 1).reshape(30, 1, 384)
    np.testing.assert_array_equal(run(tmp_path / "e.onnx", {"x": x, "s": s})[0], want)


def test_assigning_a_dynamic_dim_fixes_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model = mul_model(tmp_path / "m.onnx", DYN)
    with caplog.at_level(logging.WARNING, logger="rkfarm.utils.onnx_edit"):
        onnx_edit(model, tmp_path / "e.onnx", {"x": "a,b,c,d[a=1,c=5]->ac,b,d"})
    assert io_shapes(tmp_path / "e.onnx")[0]["x"] == [5, 48, 8]
    assert any("fixed to 5" in r.getMessage() for r in caplog.records)
    x, s = rng.standard_normal([1, 48, 5, 8]).astype(np.float32), np.zeros([2, 3], np.float32)
    got = run(tmp_path / "e.onnx", {"x": x.transpose(0, 2, 1, 3).reshape(5, 48, 8), "s": s})[0]
    np.testing.assert_array_equal(got, run(model, {"x": x, "s": s})[0])
    onnx_edit(model, tmp_path / "o.onnx", outputs_transform={"y": "a,b,c,d[a=1]->a,b,c,d"})  # no op, new declaration
    assert op_types(tmp_path / "o.onnx") == ["Mul", "Neg"]
    assert io_shapes(tmp_path / "o.onnx")[1]["y"] == [1, 48, "T", 8]


@pytest.mark.parametrize(
    ("equation", "problem"),
    [
        ("a,b,c->a,b,1,c", "the left side has 3 dims but the tensor has 4"),
        ("a,b,c,d", "exactly one '->'"),
        ("a,b,c,d->a,b->c,d", "exactly one '->'"),
        ("a,b,c,d->a,b,c", "letter 'd' is missing on the right side"),
        ("a,b,c,d->a,bc,1", "letter 'd' is missing on the right side"),  # like the vendor docstring's 'a,bce,1,1'
        ("a,b,c,d->a,b,c,d,d", "letter 'd' appears 2 times on the right side"),
        ("a,b,c,d->a,b,c,d,x", "letter 'x' on the right side is not on the left side"),
        ("a,b,c,d->a,b,c,d,2", "character '2' is not allowed on the right side"),
        ("a,B,c,d->a,B,c,d", "character 'B' is not allowed on the left side"),
        ("a, b,c,d->a,b,c,d", "character ' ' is not allowed"),
        ("a,b,c,c->a,b,c,c", "letter 'c' appears twice on the left side"),
        ("a,,c,d->a,c,d", "has an empty dim"),
        ("a,b,c,d->a1b,c,d", "mixes letters and '1'"),
        ("a,1,c,d->a,c,d", "dim 1 is written '1' but the tensor's dim 1 is 48"),
        ("ab,c,d,e->a,b,c,d,e", "gives no size to a, b"),
        ("ab,c,d,e[a=3]->a,b,c,d,e", "4 is not a multiple of 3"),
        ("a,bc,d,e[b=2,c=25]->a,b,c,d,e", "'bc' has size 50 from the sizes given, but the tensor's dim 1 is 48"),
        ("a,b,c,d[a=5]->a,b,c,d,1", "'a' has size 5"),
        ("a,b,c,d[x=2]->a,b,c,d", "letter 'x' is given a size but is not on the left side"),
        ("a,bc,d,e[b=2,b=3]->a,c,b,d,e", "letter 'b' is given a size twice"),
        ("a,bc,d,e[b=0]->a,b,c,d,e", "sizes must be at least 1"),
        ("a,bc,d,e[b=2->a,cb,d,e", "in one bracket"),
        ("a,bc,d,e[b]->a,cb,d,e", "should look like 'a=2'"),
        ("a,b,c,d->a,b,c,d[a=4]", "character '[' is not allowed on the right side"),
    ],
)
def test_invalid_equations_raise_one_clear_line(tmp_path: Path, equation: str, problem: str) -> None:
    model = mul_model(tmp_path / "m.onnx", [4, 48, 1, 8])
    with pytest.raises(OnnxEditError) as info:
        onnx_edit(model, tmp_path / "e.onnx", {"x": equation})
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"input 'x': equation {equation!r}: ") and problem in message
    assert isinstance(info.value, ValueError)  # the vendor raises ValueError
    assert not (tmp_path / "e.onnx").exists()


def test_dynamic_dim_rules(tmp_path: Path) -> None:
    model = mul_model(tmp_path / "m.onnx", DYN)
    with pytest.raises(OnnxEditError, match="merges several dynamic dims"):
        onnx_edit(model, tmp_path / "e.onnx", {"x": "a,b,c,d->ac,b,d"})
    with pytest.raises(OnnxEditError, match=r"'cd' splits dim 2 \(dynamic\).*gives no size to c, d"):
        onnx_edit(model, tmp_path / "e.onnx", {"x": "a,b,cd,e->a,b,c,d,e"})


def test_tensor_names(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model = concat_block(tmp_path / "c.onnx")
    with pytest.raises(OnnxEditError, match=r"'nope' is not in c.onnx; .*inputs \(k_cache.1, k_new\)"):
        onnx_edit(model, tmp_path / "e.onnx", {"nope": "a->a"})
    with pytest.raises(OnnxEditError, match="'cat' is an inner tensor of c.onnx"):
        onnx_edit(model, tmp_path / "e.onnx", outputs_transform={"cat": "a,b,c,d->a,b,c,d"})
    with pytest.raises(OnnxEditError, match="in both inputs_transform and outputs_transform"):
        onnx_edit(model, tmp_path / "e.onnx", {"k_new": "a,b,c,d->a,b,c,d"}, {"k_new": "a,b,c,d->a,b,c,d"})
    with caplog.at_level(logging.WARNING, logger="rkfarm.utils.onnx_edit"):  # the vendor accepts this too
        assert onnx_edit(model, tmp_path / "e.onnx", {"k_cache": "a,b,c,d->ab,c,d"}) == 0
    assert io_shapes(tmp_path / "e.onnx")[1]["k_cache"] == [64, 48, 1]
    assert any("is a graph output, given in inputs_transform" in r.getMessage() for r in caplog.records)


def test_nothing_to_do_returns_minus_one(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model = concat_block(tmp_path / "c.onnx")
    with caplog.at_level(logging.WARNING, logger="rkfarm.utils.onnx_edit"):
        assert onnx_edit(model, tmp_path / "e.onnx") == -1
    assert not (tmp_path / "e.onnx").exists() and caplog.records


def test_both_import_spellings() -> None:
    import rkfarm.utils
    from rkfarm.utils.onnx_edit import onnx_edit as direct

    assert direct is onnx_edit and rkfarm.utils.onnx_edit is onnx_edit


def kv_dataset(folder: Path) -> tuple[Path, list[tuple[Array, Array]]]:
    folder.mkdir()
    (folder / "k").mkdir()
    samples = []
    lines = ["# two samples; the first line is a comment", ""]
    for i in range(2):
        a, b = (rng.standard_normal([4, 48, 1, 8]).astype(np.float32) for _ in range(2))
        np.save(folder / "k" / f"a{i}.npy", a)
        np.save(folder / f"b{i}.npy", b)
        samples.append((a, b))
        lines.append(f"k/a{i}.npy b{i}.npy")
    (folder / "dataset.txt").write_text("\n".join(lines) + "\n")
    return folder / "dataset.txt", samples


def test_dataset_is_transformed_like_the_vendor(tmp_path: Path) -> None:
    model = concat_block(tmp_path / "concat_block.onnx")
    dataset, samples = kv_dataset(tmp_path / "data")
    out = tmp_path / "out" / "concat_block_edited.onnx"  # a folder that does not exist yet
    transform = {"k_cache.1": "a,b,c,d->1,ad,b,c"}
    assert onnx_edit(str(model), str(out), transform, {"k_cache": "a,b,c,d->1,ab,c,d"}, str(dataset)) == 0
    folder = tmp_path / "out" / "dataset_for_concat_block_edited"
    txt = (tmp_path / "out" / "dataset_for_concat_block_edited.txt").read_text()
    assert txt == "".join(
        f"./dataset_for_concat_block_edited/a{i}.npy ./dataset_for_concat_block_edited/b{i}.npy\n" for i in range(2)
    )
    for i, (a, _) in enumerate(samples):
        new_a = np.load(folder / f"a{i}.npy")
        np.testing.assert_array_equal(new_a, a.transpose(0, 3, 1, 2).reshape(1, 32, 48, 1))
        assert new_a.dtype == np.float32
        assert (folder / f"b{i}.npy").read_bytes() == (tmp_path / "data" / f"b{i}.npy").read_bytes()
    # what rkfarm's build reads from the new dataset gives the edited model the original model's function
    edited = onnx.load(out)
    read = CalibrationDataset(
        tmp_path / "out" / "dataset_for_concat_block_edited.txt", input_specs(edited, RknnConfig())
    )
    for (a, b), arrays in zip(samples, read):
        want = run(model, {"k_cache.1": a, "k_new": b})[0].reshape(1, 64, 48, 1)
        np.testing.assert_array_equal(run(out, dict(zip(["k_cache.1", "k_new"], arrays)))[0], want)


def test_dataset_files_of_one_name_do_not_overwrite_each_other(tmp_path: Path) -> None:
    model = mul_model(tmp_path / "m.onnx", [1, 3, 8, 8])
    (tmp_path / "d1").mkdir()
    (tmp_path / "d2").mkdir()
    xs = [rng.standard_normal([1, 3, 8, 8]).astype(np.float32) for _ in range(2)]
    ss = [rng.standard_normal([2, 3]).astype(np.float32) for _ in range(2)]
    for d, x, s in zip(("d1", "d2"), xs, ss):
        np.save(tmp_path / d / "x.npy", x)
        np.save(tmp_path / d / "s.npy", s)
    pixels = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "x.png")
    np.save(tmp_path / "nhwc.npy", xs[0].transpose(0, 2, 3, 1))
    lines = "d1/x.npy d1/s.npy\nd2/x.npy d2/s.npy\nx.png d1/s.npy\nnhwc.npy d1/s.npy\n"
    (tmp_path / "ds.txt").write_text(lines)
    onnx_edit(model, tmp_path / "e.onnx", {"x": "a,b,c,d->a,cd,b"}, dataset=tmp_path / "ds.txt")
    rows = [line.split() for line in (tmp_path / "dataset_for_e.txt").read_text().splitlines()]
    assert [[Path(f).name for f in row] for row in rows] == [
        ["x.npy", "s.npy"],
        ["x_1.npy", "s_1.npy"],
        ["x_2.npy", "s.npy"],  # the image, as an array; the same s.npy file is written once
        ["nhwc.npy", "s.npy"],
    ]
    folder = tmp_path / "dataset_for_e"
    for name, x in (("x.npy", xs[0]), ("x_1.npy", xs[1]), ("nhwc.npy", xs[0])):
        np.testing.assert_array_equal(np.load(folder / name), x.transpose(0, 2, 3, 1).reshape(1, 64, 3))
    image = np.load(folder / "x_2.npy")
    assert image.dtype == np.uint8
    np.testing.assert_array_equal(image, pixels.reshape(1, 64, 3))  # NCHW of the image, re-laid out: HWC again
    np.testing.assert_array_equal(np.load(folder / "s_1.npy"), ss[1])


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("k/a0.npy", r"line 1: 1 file\(s\) for a model with 2 input\(s\)"),
        ("k/zz.npy b0.npy", r"line 1: .*zz.npy: no such file \(relative paths start at"),
        ("b1.npy.txt b0.npy", "no such file"),
        ("wrong.npy b0.npy", r"line 1: .*wrong.npy: shape \[4, 48, 8\] is not the input's shape \[4, 48, 1, 8\]"),
        ("notes.txt b0.npy", "not a sample file"),
        ("img.png b0.npy", "an image can only feed a 4-D NCHW image input"),
    ],
)
def test_dataset_errors_name_the_line_and_write_nothing(tmp_path: Path, line: str, problem: str) -> None:
    model = concat_block(tmp_path / "c.onnx")
    dataset, _ = kv_dataset(tmp_path / "data")
    np.save(tmp_path / "data" / "wrong.npy", np.zeros([4, 48, 8], np.float32))
    (tmp_path / "data" / "notes.txt").write_text("x")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "data" / "img.png")
    dataset.write_text(line + "\n")
    with pytest.raises(DatasetError, match=problem):
        onnx_edit(model, tmp_path / "e.onnx", {"k_cache.1": "a,b,c,d->1,ad,b,c"}, dataset=dataset)
    assert not (tmp_path / "e.onnx").exists() and not (tmp_path / "dataset_for_e.txt").exists()
