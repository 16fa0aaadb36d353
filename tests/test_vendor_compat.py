"""What the vendor's own example scripts revealed (issue 9), each written as a vendor script would call it: the
default RKNN() (no exceptions; return codes), the vendor's argument spellings, files where the vendor puts them.

Every item here failed before it was fixed. The API-wide spelling suite is ``test_vendor_api.py``.
"""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import numpy as np
import pytest
from onnx_models import make_model
from PIL import Image
from vendor_fixtures import SIZE, example_folder, images

from conftest import AgentProcess
from rkfarm import RKNN
from rkfarm.analysis.dumps import file_stems, format_map, parse_map


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder as a vendor example has it: the model, dataset.txt with its images, a test image."""
    return example_folder(tmp_path_factory.mktemp("vendor_example"), test_image=True)


def quantized(work: Path) -> RKNN:
    rknn = RKNN(verbose=False)
    assert rknn.config(mean_values=[123.68, 116.28, 103.53], std_values=[57.38, 57.38, 57.38],
                       target_platform="rk3588") == 0  # fmt: skip
    assert rknn.load_onnx(model=str(work / "small.onnx")) == 0
    assert rknn.build(do_quantization=True, dataset=str(work / "dataset.txt")) == 0
    return rknn


# 1. accuracy_analysis(output_dir=None) (functions/hybrid_quant step 2, functions/mmse)
def test_accuracy_analysis_output_dir_none(work: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    rknn = quantized(work)
    ret = rknn.accuracy_analysis(inputs=[str(work / "test.png")], output_dir=None)
    assert ret == 0, rknn.last_error
    # the vendor's default folder, its tables, and (as the vendor) no tensor dumps
    assert (tmp_path / "snapshot" / "error_analysis.txt").is_file()
    assert (tmp_path / "snapshot" / "map_name_to_file.txt").is_file()
    assert not (tmp_path / "snapshot" / "golden").exists()
    rknn.release()


# 2. dump names (functions/accuracy_analysis reads ./snapshot/golden/<tensor>.txt)
def test_accuracy_analysis_dumps_where_the_vendor_script_reads_them(
    work: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    rknn = quantized(work)
    assert rknn.accuracy_analysis(inputs=[str(work / "test.png")], output_dir="./snapshot") == 0
    assert rknn.init_runtime() == 0
    image = np.asarray(Image.open(work / "test.png").convert("RGB"))
    outputs = rknn.inference(inputs=[image])
    assert outputs is not None
    # the script's own lines: np.genfromtxt('./snapshot/golden/<output>.txt') and the simulator's
    golden = np.genfromtxt("./snapshot/golden/prob.txt")
    simulated = np.genfromtxt("./snapshot/simulator/prob.txt")
    np.testing.assert_allclose(simulated, outputs[0].ravel(), atol=1e-6)
    assert golden.shape == (5,) and abs(golden.sum() - 1) < 1e-5
    assert int(np.argmax(golden)) == int(np.argmax(simulated))
    # names with the characters the vendor replaces: block1/conv:0 -> block1_conv_0, . and ; too
    mapping = parse_map(Path("snapshot/map_name_to_file.txt").read_text())
    assert mapping["block1/relu.out"] == "block1_relu_out"
    assert Path("snapshot/golden/block1_relu_out.txt").is_file()
    assert Path("snapshot/simulator/npy/block1_relu_out.npy").is_file()
    assert next(iter(mapping)) == "image" and list(mapping)[-1] == "prob"  # the map keeps graph order
    rknn.release()


def test_dump_file_names_follow_the_vendor_and_never_collide() -> None:
    names = ["in/put:0", "a.b-c", "x y", "a/b", "a_b", "(p)[q]", "m;n", "L" * 150, "L" * 150 + "x"]
    stems = file_stems(names)
    # observed with RKNN-Toolkit2 2.5.0: / : . ; become _, everything else is kept
    assert stems["in/put:0"] == "in_put_0" and stems["a.b-c"] == "a_b-c" and stems["x y"] == "x y"
    assert stems["(p)[q]"] == "(p)[q]" and stems["m;n"] == "m_n"
    # the vendor lets a/b and a_b overwrite one file; the name needing no change keeps it, the other is kept too
    assert stems["a_b"] == "a_b" and stems["a/b"] == "a_b_1"
    assert len(set(stems.values())) == len(names)
    assert all(len(s) <= 128 for s in stems.values()) and stems["L" * 150].startswith("L" * 100)
    # the map's fixed-width columns read back exactly, spaces in names included
    assert parse_map(format_map(stems)) == stems
    first = format_map(stems).splitlines()[0]
    assert first.startswith("layer_name") and first.index("file_name") == 151 + 10  # the longest name + 10


# 3. calibration images of another size (caffe/mobilenet_v2's 299x299 images for a 224x224 input)
def test_calibration_images_are_resized(work: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    for i, image in enumerate(images(4, seed=1, size=2 * SIZE + 3)):
        Image.fromarray(image).save(tmp_path / f"big{i}.png")
    (tmp_path / "dataset.txt").write_text("".join(f"big{i}.png\n" for i in range(4)))
    rknn = RKNN(verbose=False)
    rknn.config(mean_values=[[127.5] * 3], std_values=[[127.5] * 3], target_platform="rk3588")
    rknn.load_onnx(model=str(work / "small.onnx"))
    with caplog.at_level(logging.INFO, logger="rkfarm"):
        ret = rknn.build(do_quantization=True, dataset=str(tmp_path / "dataset.txt"))
    assert ret == 0, rknn.last_error
    assert any("resizing calibration images" in r.getMessage() for r in caplog.records)
    assert rknn.package is not None and rknn.package.header.quantization.calibration_samples == 4
    rknn.release()


# 8. export_encrypted_rknn_model without a farm key (functions/npu_device_test)
def test_encrypting_makes_the_farm_key_on_first_use(
    work: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    key = tmp_path / "config" / "farm.key"
    monkeypatch.setenv("RKFARM_FARM_KEY_FILE", str(key))
    monkeypatch.chdir(tmp_path)
    rknn = RKNN(verbose=False)
    rknn.config(mean_values=[[127.5] * 3], std_values=[[127.5] * 3], target_platform="rk3588")
    rknn.load_onnx(model=str(work / "small.onnx"))
    rknn.build(do_quantization=False)
    assert rknn.export_rknn("./small.rknn") == 0
    with caplog.at_level(logging.WARNING, logger="rkfarm"):
        assert rknn.export_encrypted_rknn_model("./small.rknn", None, 3) == 0, rknn.last_error
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    told = " ".join(r.getMessage() for r in caplog.records)
    assert str(key) in told and "--farm-key" in told  # where the key is and how boards get it
    assert (tmp_path / "small.crypt.rknn").is_file()
    first_key = key.read_bytes()
    assert rknn.export_encrypted_rknn_model("./small.rknn", "./again.rknn", 1) == 0
    assert key.read_bytes() == first_key  # made once, then reused
    # the simulator opens it with that key, and computes what the plain model computes
    image = images(1, seed=3)[0]
    plain = RKNN()
    plain.load_rknn("./small.rknn")
    plain.init_runtime()
    want = plain.inference(inputs=[image])
    sealed = RKNN()
    assert sealed.load_rknn("./small.crypt.rknn") == 0 and sealed.init_runtime() == 0
    got = sealed.inference(inputs=[image])
    assert got is not None and want is not None
    np.testing.assert_array_equal(got[0], want[0])
    for r in (rknn, plain, sealed):
        r.release()


# 9. target matching: an exact platform match wins over an agent reporting "unknown" (a PC)
def test_exact_platform_wins_over_unknown(work: Path, make_agent: object, caplog: pytest.LogCaptureFixture) -> None:
    assert callable(make_agent)
    board: AgentProcess = make_agent(platform="rk3588")
    pc: AgentProcess = make_agent(platform="unknown")
    rknn = RKNN(verbose=False)
    rknn.config(mean_values=[[127.5] * 3], std_values=[[127.5] * 3], target_platform="rk3588")
    rknn.load_onnx(model=str(work / "small.onnx"))
    rknn.build(do_quantization=False)
    assert rknn.init_runtime(target="rk3588") == 0, rknn.last_error
    assert board.agent_id in rknn.get_sdk_version()
    # no rk3566 agent: the PC serves, with a warning
    with caplog.at_level(logging.WARNING, logger="rkfarm"):
        assert rknn.init_runtime(target="rk3566") == 0, rknn.last_error
    assert pc.agent_id in rknn.get_sdk_version()
    assert any("reports no Rockchip platform" in r.getMessage() for r in caplog.records)
    rknn.release()


# 10. build(rknn_batch_size=4) (functions/multi_batch): four outputs equal four batch-1 runs of the same build
@pytest.mark.parametrize("do_quantization", [False, True], ids=["float16", "int8"])
def test_multi_batch_equals_single_runs(work: Path, do_quantization: bool) -> None:
    batch = images(4, seed=11)
    outputs = {}
    for size in (None, 4):
        rknn = RKNN(verbose=False)
        rknn.config(mean_values=[[127.5] * 3], std_values=[[127.5] * 3], target_platform="rk3588")
        rknn.load_onnx(model=str(work / "small.onnx"))
        ret = rknn.build(do_quantization=do_quantization, dataset=str(work / "dataset.txt"), rknn_batch_size=size)
        assert ret == 0, rknn.last_error
        assert rknn.init_runtime() == 0
        if size is None:
            runs = [rknn.inference(inputs=[image]) for image in batch]
            outputs[1] = np.concatenate([r[0] for r in runs if r is not None])
        else:
            assert rknn.package is not None and list(rknn.package.header.inputs[0].tensor.shape) == [4, 3, SIZE, SIZE]
            result = rknn.inference(inputs=[np.stack(batch)])
            assert result is not None and result[0].shape == (4, 5)
            outputs[4] = result[0]
        rknn.release()
    assert outputs[1].shape == (4, 5)
    # row i of the batch is image i (not a neighbour's); the same kernels, so the same numbers
    np.testing.assert_allclose(outputs[4], outputs[1], rtol=1e-5, atol=1e-6)
    assert len({int(np.argmax(row)) for row in outputs[1]}) > 1 or np.ptp(outputs[1], axis=0).max() > 1e-3


# 11. functions/npu_device_test, with a local agent as the board
def test_npu_device_test_flow(work: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_agent: object) -> None:
    assert callable(make_agent)
    board: AgentProcess = make_agent(platform="rk3588")
    monkeypatch.setenv("RKFARM_FARM_KEY_FILE", str(tmp_path / "farm.key"))
    monkeypatch.chdir(tmp_path)
    rknn = quantized(work)
    ret = rknn.accuracy_analysis(inputs=[str(work / "test.png")], output_dir="./snapshot", target="rk3588")
    assert ret == 0, rknn.last_error
    assert (tmp_path / "snapshot" / "runtime" / "prob.txt").is_file()
    assert rknn.export_rknn("./small.rknn") == 0
    assert rknn.export_encrypted_rknn_model("./small.rknn", None, 3) == 0
    rknn.release()

    rknn = RKNN(verbose=False)
    assert rknn.load_rknn("./small.rknn") == 0
    img = np.expand_dims(np.asarray(Image.open(work / "test.png").convert("RGB")), 0)
    ids, _ = rknn.list_devices()
    assert board.agent_id in ids
    assert rknn.init_runtime(target="rk3588", perf_debug=True, eval_mem=True) == 0, rknn.last_error
    version = rknn.get_sdk_version()
    assert "API: rkfarm" in version and board.agent_id in version
    perf = rknn.eval_perf()
    assert perf is not None and perf.total_us > 0 and perf.layers
    memory = rknn.eval_memory()
    assert memory is not None and memory["total_memory"] >= memory["weight_memory"] > 0
    outputs = rknn.inference(inputs=[img], data_format=["nhwc"])
    assert outputs is not None and outputs[0].shape == (1, 5)
    rknn.release()

    simulator = RKNN(verbose=False)  # the board computes what the simulator computes
    simulator.load_rknn("./small.rknn")
    simulator.init_runtime()
    want = simulator.inference(inputs=[img], data_format=["nhwc"])
    assert want is not None
    np.testing.assert_allclose(outputs[0], want[0], atol=1e-6)
    simulator.release()


def test_single_core_mode_runs_on_one_core(work: Path, tmp_path: Path) -> None:
    """config(single_core_mode=True): the package says so; the runtime uses one core and refuses several."""
    rknn = RKNN(verbose=False)
    rknn.config(mean_values=[[127.5] * 3], std_values=[[127.5] * 3], target_platform="rk3588", single_core_mode=True)
    rknn.load_onnx(model=str(work / "small.onnx"))
    assert rknn.build(do_quantization=False) == 0
    assert rknn.package is not None and rknn.package.header.single_core
    assert rknn.init_runtime(core_mask=RKNN.NPU_CORE_0_1_2) == -1
    assert "single_core_mode=True" in str(rknn.last_error) and "NPU_CORE_0" in str(rknn.last_error)
    assert rknn.init_runtime() == 0  # auto: the one core
    assert rknn.inference(inputs=[images(1, seed=2)[0]]) is not None
    rknn.release()


# 7. vendor import paths besides rknn.api.RKNN (functions/custom_op, functions/onnx_edit)
def port(source: str, rule: str) -> str:
    """The script with only its import lines changed: ``rknn.api`` -> ``rkfarm`` (then ``rknn`` -> ``rkfarm``),
    or ``rknn`` -> ``rkfarm`` throughout."""
    lines = []
    for line in source.splitlines():
        ported = line
        if line.startswith(("from rknn", "import rknn")):
            ported = line.replace("rknn.api", "rkfarm") if rule == "rknn.api" else line
            ported = ported.replace("rknn", "rkfarm")
        lines.append(ported)
    return "\n".join(lines) + "\n"


def _concat_block(path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    ins = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [4, 48, 1, 8]) for n in ("k_cache.1", "k_new")]
    nodes = [
        helper.make_node("Concat", ["k_cache.1", "k_new"], ["cat"], axis=3),
        helper.make_node("Transpose", ["cat"], ["k_cache"], perm=[0, 3, 1, 2]),
    ]
    out = helper.make_tensor_value_info("k_cache", TensorProto.FLOAT, [4, 16, 48, 1])
    graph = helper.make_graph(nodes, "concat_block", ins, [out])
    onnx.save(make_model(graph, 13), str(path))


@pytest.mark.slow
@pytest.mark.parametrize("rule", ["rknn.api", "rknn"])
def test_vendor_modules_under_both_porting_rules(rule: str, tmp_path: Path) -> None:
    import subprocess
    import sys

    source = (Path(__file__).parent / "data" / "vendor_imports_script.py").read_text()
    ported = port(source, rule)
    assert "rknn" not in "".join(line for line in ported.splitlines() if line.startswith("from "))
    script = tmp_path / "ported.py"
    script.write_text(ported)
    _concat_block(tmp_path / "concat_block.onnx")
    rng = np.random.default_rng(8)
    caches, news = [], []
    for i in range(4):
        caches.append(rng.normal(0, 1, (4, 48, 1, 8)).astype(np.float32))
        news.append(rng.normal(0, 1, (4, 48, 1, 8)).astype(np.float32))
        np.save(tmp_path / f"cache{i}.npy", caches[-1])
        np.save(tmp_path / f"new{i}.npy", news[-1])
    (tmp_path / "dataset.txt").write_text("".join(f"cache{i}.npy new{i}.npy\n" for i in range(4)))
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "concat axis 3" in proc.stdout and "outputs (1, 64, 48, 1)" in proc.stdout
    # the edited model, fed the edited layout, computes the original function in the new output layout
    edited_cache = caches[0].transpose(0, 3, 1, 2).reshape(1, 32, 48, 1)  # a,b,c,d -> 1,ad,b,c
    assert np.array_equal(np.load(tmp_path / "dataset_for_concat_block_edited" / "cache0.npy"), edited_cache)
    want = np.concatenate([caches[0], news[0]], axis=3).transpose(0, 3, 1, 2).reshape(1, 64, 48, 1)
    got = np.load(tmp_path / "out.npy")
    assert got.shape == want.shape and np.abs(got - want).max() < 0.05 * np.abs(want).max()
