"""The Caffe frontend: each layer against a PyTorch re-implementation, a MobileNet-SSD, errors, CLI, vendor script."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from rkfarm.api import RKNN
from rkfarm.errors import ModelLoadError, NotSupportedError
from rkfarm.frontends import LoadedGraph
from rkfarm.frontends.caffe import load_caffe

torch = pytest.importorskip("torch", reason="the Caffe layers' reference is written in torch (pip install torch)")
from caffe_nets import (  # noqa: E402  (imports torch: only once the skip above passed)
    CASES,
    POOLS,
    CaffeNet,
    caffe_pool,
    caffemodel_bytes,
    header,
    layer,
    mobilenet_classifier,
    mobilenet_ssd,
)


def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds)))


def assert_close(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> float:
    """Same outputs by name; max abs diff <= 1e-4 * max(1, range of the reference). Returns the worst diff."""
    assert sorted(got) == sorted(want)
    worst = 0.0
    for name, ref in want.items():
        assert got[name].shape == ref.shape, name
        diff = float(np.abs(got[name].astype(np.float64) - ref).max())
        tol = 1e-4 * max(1.0, float(ref.max() - ref.min()))
        assert diff <= tol, f"{name}: max abs diff {diff} > {tol}"
        worst = max(worst, diff)
    return worst


def check(net: CaffeNet, tmp_path: Path, **kwargs: object) -> LoadedGraph:
    proto, weights = net.write(tmp_path)
    loaded = load_caffe(proto, weights, **kwargs)  # type: ignore[arg-type]
    model = loaded.model
    onnx.checker.check_model(model)
    assert [o.domain for o in model.opset_import] == [""] and model.opset_import[0].version == 17
    assert all(n.domain == "" for n in model.graph.node)
    feeds = net.feeds()
    assert_close(run(model, feeds), net.reference(feeds))
    return loaded


@pytest.mark.parametrize("case", sorted(CASES))
def test_layer_matches_pytorch(case: str, tmp_path: Path) -> None:
    loaded = check(CASES[case](), tmp_path)
    assert loaded.framework == "caffe" and loaded.source_name == "net.prototxt"


@pytest.mark.parametrize("spec", POOLS, ids=str)
def test_torch_pooling_reference_is_caffes(spec: tuple[str, int, int, int, tuple[int, int]]) -> None:
    """The torch reference of the pooling cases agrees with Caffe's pooling written out with loops."""
    pool, k, s, p, hw = spec
    net = CASES["pool_{}_k{}_s{}_p{}_{}x{}".format(pool, k, s, p, *hw)]()
    feeds = net.feeds()
    want = caffe_pool(feeds["data"], pool, (k, k), (s, s), (p, p))
    assert_close(net.reference(feeds), {"pool": want})


def test_node_names_are_layer_names_and_in_place_values_renamed(tmp_path: Path) -> None:
    loaded = check(CASES["batchnorm_scale_relu_in_place"](), tmp_path)
    nodes = {n.name: n for n in loaded.model.graph.node}
    for name in ("conv", "bn", "scale", "relu"):
        assert name in nodes
    assert list(nodes["relu"].output) == ["conv"]  # the last value of the in-place blob carries its name
    assert list(nodes["conv"].output) == ["conv/conv"]


@pytest.mark.parametrize("v1_weights", [False, True])
def test_legacy_blob_dims(tmp_path: Path, v1_weights: bool) -> None:
    """num/channels/height/width blobs (padded to 4-D), also in a V1 `layers` caffemodel under a new prototxt."""
    net = CASES["ip_axis2"]()
    net.v1 = v1_weights
    proto, weights = net.write(tmp_path, legacy_dims=True)
    feeds = net.feeds()
    assert_close(run(load_caffe(proto, weights).model, feeds), net.reference(feeds))


def test_input_layers_and_input_name_order(tmp_path: Path) -> None:
    inputs: dict[str, tuple[int, ...]] = {"a": (1, 3, 4, 5), "b": (1, 3, 4, 5)}
    text = header(inputs, "layer") + layer("sum", "Eltwise", ["a", "b"], "sum", "eltwise_param { coeff: 2 coeff: 1 }")
    net = CaffeNet(text, inputs, lambda f: {"sum": 2 * f["a"] + f["b"]})
    loaded = check(net, tmp_path, input_name=["b", "a"])
    assert [i.name for i in loaded.model.graph.input] == ["b", "a"]
    with pytest.raises(ModelLoadError, match=r"input_name \['a'\] must name the net's 2 input"):
        load_caffe(tmp_path / "net.prototxt", tmp_path / "net.caffemodel", ["a"])


def test_without_caffemodel_random_weights(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    proto, _ = CASES["batchnorm_scale_relu_in_place"]().write(tmp_path)
    with caplog.at_level(logging.WARNING):
        first = load_caffe(proto)
    assert "random weights" in caplog.text
    second = load_caffe(proto)
    variance = next(i for i in first.model.graph.initializer if i.name == "bn/variance")
    assert (onnx.numpy_helper.to_array(variance) > 0).all()
    assert [onnx.numpy_helper.to_array(i).tolist() for i in first.model.graph.initializer] == [
        onnx.numpy_helper.to_array(i).tolist() for i in second.model.graph.initializer
    ]  # deterministic
    feeds = {"data": np.ones((1, 4, 11, 13), np.float32)}
    assert np.isfinite(run(first.model, feeds)["conv"]).all()


def test_detection_output_is_dropped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    net = CASES["concat_axis1"]()
    net.prototxt += layer(
        "detection_out", "DetectionOutput", ["a", "cat"], "detection_out",
        "detection_output_param { num_classes: 21 nms_param { nms_threshold: 0.45 top_k: 100 } keep_top_k: 50 }",
    )  # fmt: skip
    concat_only = net.forward

    def forward(f: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = concat_only(f)
        return {**out, "a": out["cat"][:, :6]}  # the first of the concatenated convs

    net.forward = forward
    with caplog.at_level(logging.WARNING):
        loaded = check(net, tmp_path)
    assert [o.name for o in loaded.model.graph.output] == ["a", "cat"]  # its bottoms, in its order
    assert "dropping DetectionOutput layer 'detection_out'" in caplog.text

    net.prototxt += layer("after", "ReLU", "detection_out", "after")
    proto, weights = net.write(tmp_path)
    with pytest.raises(ModelLoadError, match="drops .*cut the graph before it"):
        load_caffe(proto, weights)


# ---- malformed models: one-line errors naming the file ------------------------------------------------------


def one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_truncated_caffemodel(tmp_path: Path) -> None:
    proto, weights = CASES["conv_k3_pad"]().write(tmp_path)
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ModelLoadError) as exc:
        load_caffe(proto, weights)
    assert str(weights) in one_line(exc) and "truncated or not a caffemodel" in str(exc.value)


def test_caffemodel_that_is_text(tmp_path: Path) -> None:
    proto, _ = CASES["conv_k3_pad"]().write(tmp_path)
    with pytest.raises(ModelLoadError, match="prototxt .text., not a caffemodel"):
        load_caffe(proto, proto)


def test_unknown_layer_names_file_line_name_type(tmp_path: Path) -> None:
    net = CASES["conv_k3_pad"]()
    net.prototxt += layer("lrn1", "LRN", "conv", "lrn1", "lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 }")
    proto, weights = net.write(tmp_path)
    line = [i + 1 for i, t in enumerate(net.prototxt.splitlines()) if t == "layer {"][-1]
    with pytest.raises(ModelLoadError) as exc:
        load_caffe(proto, weights)
    assert one_line(exc) == f"{proto}:{line}: layer 'lrn1' has type 'LRN' which rkfarm cannot convert"


@pytest.mark.parametrize("content", [b"\x00\xff\xfe binary \x80", b"this { is : not : protobuf", b'{"json": 1}'])
def test_prototxt_that_is_not_text_protobuf(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.prototxt"
    path.write_bytes(content)
    with pytest.raises(ModelLoadError) as exc:
        load_caffe(path)
    assert one_line(exc).startswith(str(path)) and "not" in str(exc.value)


def test_blob_shape_mismatch(tmp_path: Path) -> None:
    net = CASES["conv_k3_pad"]()
    proto, weights = net.write(tmp_path)
    net.blobs["conv"][0] = net.blobs["conv"][0][:, :, :2]
    weights.write_bytes(caffemodel_bytes(net.blobs))
    with pytest.raises(ModelLoadError) as exc:
        load_caffe(proto, weights)
    assert one_line(exc) == (
        f"{weights}: layer 'conv' (Convolution): blob 0 (weight) has shape [6, 4, 2, 3]; the prototxt makes it "
        "[6, 4, 3, 3]"
    )


def test_missing_blobs_name_the_layer(tmp_path: Path) -> None:
    net = CASES["batchnorm_scale_relu_in_place"]()
    proto, weights = net.write(tmp_path)
    del net.blobs["scale"]
    weights.write_bytes(caffemodel_bytes(net.blobs))
    with pytest.raises(ModelLoadError, match=r"layer 'scale' \(Scale\) needs 2 weight blob\(s\) but the caffemodel"):
        load_caffe(proto, weights)
    net.blobs["scale"] = [np.ones(6, np.float32)]  # bias_term: true needs a second blob
    weights.write_bytes(caffemodel_bytes(net.blobs))
    with pytest.raises(ModelLoadError, match=r"'scale' \(Scale\) has 1 blob\(s\); the prototxt makes it need 2"):
        load_caffe(proto, weights)


def test_unknown_field_in_a_converted_layer_is_refused(tmp_path: Path) -> None:
    net = CASES["dropout_in_place"]()
    net.prototxt = net.prototxt.replace("dropout_ratio: 0.3", "dropout_ratio: 0.3 scale_train: false")
    proto, weights = net.write(tmp_path)
    line = next(i + 1 for i, t in enumerate(net.prototxt.splitlines()) if "scale_train" in t)
    with pytest.raises(ModelLoadError) as exc:
        load_caffe(proto, weights)
    msg = one_line(exc)
    assert msg.startswith(f"{proto}:{line}: ") and '"scale_train"' in msg and "layer 'act' (Dropout)" in msg


def test_unknown_fields_in_dropped_layers_and_comments_are_fine(tmp_path: Path) -> None:
    net = CASES["conv_k3_pad"]()
    net.prototxt = net.prototxt.replace(
        'name: "test"\n',
        'name: "test"  # a comment with a { brace\n'
        'layer { name: "data" type: "Data" top: "x" include { phase: TRAIN }\n'
        '  data_param { source: "lmdb}" backend: LMDB } fork_only_param { anything: 3 } }\n',
    )
    check(net, tmp_path)


def test_net_state_rules(tmp_path: Path) -> None:
    net = CASES["conv_k3_pad"]()
    net.prototxt += layer("train_only", "Accuracy", ["conv", "label"], "acc", "exclude { phase: TEST }")
    net.prototxt += layer("test_only", "ReLU", "conv", "conv", "include { phase: TEST }")
    forward = net.forward
    net.forward = lambda f: {"conv": torch.relu(forward(f)["conv"])}
    check(net, tmp_path)
    net.prototxt += layer("both", "ReLU", "conv", "conv", "include { phase: TEST } exclude { phase: TRAIN }")
    proto, weights = net.write(tmp_path)
    with pytest.raises(ModelLoadError, match="both include and exclude rules"):
        load_caffe(proto, weights)


def test_unknown_top_level_field_and_mixed_forms(tmp_path: Path) -> None:
    net = CASES["conv_k3_pad"]()
    net.prototxt = net.prototxt.replace('name: "test"\n', 'name: "test"\nsome_fork_option: 2\n')
    proto, weights = net.write(tmp_path)
    with pytest.raises(ModelLoadError) as exc:
        load_caffe(proto, weights)
    assert one_line(exc).startswith(f"{proto}:2: ") and '"some_fork_option"' in str(exc.value)
    net = CASES["conv_k3_pad"]()
    net.prototxt += 'layers { name: "relu" type: RELU bottom: "conv" top: "conv" }\n'
    proto, weights = net.write(tmp_path)
    with pytest.raises(ModelLoadError, match="mixes `layer {}` and the old `layers {}` form"):
        load_caffe(proto, weights)


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        (("pool: MAX", "pool: STOCHASTIC"), NotSupportedError, "STOCHASTIC pooling is not supported"),
        (("kernel_size: 3 stride: 2 pad: 0", "kernel_size: 1 stride: 2 pad: 0"), ModelLoadError,
         "the last window .* lies outside the input"),
        (("pad: 0", "pad: 3"), ModelLoadError, "pad .* must be smaller than the kernel"),
    ],
)  # fmt: skip
def test_pooling_refusals(tmp_path: Path, change: tuple[str, str], error: type[Exception], match: str) -> None:
    net = CASES["pool_MAX_k3_s2_p0_9x10"]()
    net.prototxt = net.prototxt.replace(*change)
    proto, weights = net.write(tmp_path)
    with pytest.raises(error, match=match) as exc:
        load_caffe(proto, weights)
    assert re.match(rf"{re.escape(str(proto))}:\d+: layer 'pool' \(Pooling\)", one_line(exc))


def test_batchnorm_batch_statistics_refused(tmp_path: Path) -> None:
    net = CASES["batchnorm_scale_relu_in_place"]()
    net.prototxt = net.prototxt.replace("use_global_stats: true", "use_global_stats: false")
    proto, weights = net.write(tmp_path)
    with pytest.raises(NotSupportedError, match="use_global_stats: false"):
        load_caffe(proto, weights)


# ---- a real-world-sized net, the CLI and a vendor-style script ------------------------------------------------


@pytest.mark.slow
def test_mobilenet_ssd_matches_pytorch(tmp_path: Path, record_property: Callable[[str, object], None]) -> None:
    net = mobilenet_ssd()
    proto, weights = net.write(tmp_path, "mobilenet_ssd")
    start = time.perf_counter()
    loaded = load_caffe(proto, weights)
    seconds = time.perf_counter() - start
    record_property("conversion_seconds", round(seconds, 3))
    print(f"MobileNet-SSD 300x300: converted in {seconds:.2f} s, {len(loaded.model.graph.node)} ONNX nodes")
    assert seconds < 30
    outputs = {o.name: [d.dim_value for d in o.type.tensor_type.shape.dim] for o in loaded.model.graph.output}
    assert outputs == {"mbox_loc": [1, 7668], "mbox_conf_flatten": [1, 1917 * 21], "mbox_priorbox": [1, 2, 7668]}
    feeds = net.feeds()
    worst = assert_close(run(loaded.model, feeds), net.reference(feeds))
    print(f"MobileNet-SSD: max abs diff vs PyTorch {worst:.2e}")


@pytest.mark.slow
def test_mobilenet_ssd_float_and_int8_builds(tmp_path: Path, record_property: Callable[[str, object], None]) -> None:
    """The SSD through the vendor's flow (config with mean/std, load_caffe, build, inference on an RGB image in the
    simulator): the float16 build and the int8 build (8 calibration images, disjoint from the test image) against
    PyTorch's float32 on the same image. The priors are constants: int8 moves them by less than one step."""
    from PIL import Image

    net = mobilenet_ssd()
    proto, weights = net.write(tmp_path, "ssd")
    images = synthetic_images(tmp_path, 9, 300)
    dataset = tmp_path / "dataset.txt"
    dataset.write_text("".join(f"{p.name}\n" for p in images[:8]))
    image = np.asarray(Image.open(images[8]).convert("RGB"))
    x = ((image.astype(np.float32) - 127.5) / 127.5).transpose(2, 0, 1)[np.newaxis]
    want = net.reference({"data": x})
    names = ["mbox_loc", "mbox_conf_flatten", "mbox_priorbox"]
    for quantized, floor in ((False, 0.9999), (True, 0.995)):
        rknn = RKNN()
        rknn.config(mean_values=[127.5] * 3, std_values=[127.5] * 3, target_platform="rk3588")
        assert rknn.load_caffe(str(proto), str(weights)) == 0
        assert rknn.build(do_quantization=quantized, dataset=str(dataset)) == 0
        assert rknn.init_runtime() == 0
        got = rknn.inference(inputs=[image])
        rknn.release()
        assert got is not None and len(got) == 3
        for name, g in zip(names, got):
            g64, w64 = g.astype(np.float64).ravel(), want[name].astype(np.float64).ravel()
            assert g64.size == w64.size, name
            cos = float(g64 @ w64 / (np.linalg.norm(g64) * np.linalg.norm(w64)))
            record_property(f"{'int8' if quantized else 'float16'}_{name}_cosine", round(cos, 6))
            print(f"MobileNet-SSD {'int8' if quantized else 'float16'} {name}: cosine {cos:.6f} vs PyTorch")
            assert cos > floor, (quantized, name, cos)
        priors = got[2].astype(np.float64).ravel() - want["mbox_priorbox"].ravel()
        assert np.abs(priors).max() < 1 / 255, quantized


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rkfarm.cli", *args], capture_output=True, text=True, timeout=300)


def test_cli_build(tmp_path: Path) -> None:
    from rkfarm.packages import load_package

    proto, weights = CASES["batchnorm_scale_relu_in_place"]().write(tmp_path)
    out = tmp_path / "out.rkfm"
    done = run_cli("build", str(proto), "--blobs", str(weights), "-o", str(out))
    assert done.returncode == 0, done.stderr
    package = load_package(out)
    assert [i.tensor.name for i in package.header.inputs] == ["data"]
    assert [list(o.shape) for o in package.header.outputs] == [[1, 6, 9, 11]]
    missing = run_cli("build", str(proto), "--blobs", str(tmp_path / "absent.caffemodel"), "-o", str(out))
    assert missing.returncode != 0
    assert missing.stderr.strip().count("\n") == 0 and "absent.caffemodel: no such file" in missing.stderr


VENDOR_SCRIPT = """\
import sys

import numpy as np
from PIL import Image
from rkfarm.api import RKNN

prototxt, caffemodel, dataset, image, out_rknn, out_npy = sys.argv[1:]
rknn = RKNN(verbose=False)
print("--> Config model")
rknn.config(mean_values=[103.94, 116.78, 123.68], std_values=[58.82, 58.82, 58.82], quant_img_RGB2BGR=True,
            target_platform="rk3588")
print("--> Loading model")
ret = rknn.load_caffe(model=prototxt, blobs=caffemodel)
if ret != 0:
    print("Load model failed!")
    exit(ret)
print("--> Building model")
ret = rknn.build(do_quantization=True, dataset=dataset)
if ret != 0:
    print("Build model failed!")
    exit(ret)
ret = rknn.export_rknn(out_rknn)
if ret != 0:
    print("Export rknn model failed!")
    exit(ret)
ret = rknn.init_runtime()
if ret != 0:
    print("Init runtime environment failed!")
    exit(ret)
img = np.asarray(Image.open(image).convert("RGB"))[:, :, ::-1]  # BGR, as cv2.imread gives it
outputs = rknn.inference(inputs=[img])
np.save(out_npy, outputs[0])
rknn.release()
print("done")
"""


def synthetic_images(folder: Path, count: int, size: int) -> list[Path]:
    """Smooth colour fields with a few discs: PNG and JPEG, as RGB files."""
    from PIL import Image

    rng = np.random.default_rng(11)
    yy, xx = np.mgrid[0:size, 0:size] / size
    paths = []
    for i in range(count):
        img = np.stack([np.sin(xx * rng.uniform(1, 6) + rng.uniform(0, 3)) * 0.5 + 0.5 for _ in range(3)], -1) * 200
        for _ in range(3):
            cy, cx, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.05, 0.3)
            img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.uniform(0, 255, 3)
        path = folder / f"img{i}.{'png' if i % 2 else 'jpg'}"
        Image.fromarray(np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


@pytest.mark.slow
def test_vendor_script_int8(tmp_path: Path, record_property: Callable[[str, object], None]) -> None:
    from PIL import Image

    net = mobilenet_classifier(96)
    proto, weights = net.write(tmp_path, "classifier")
    images = synthetic_images(tmp_path, 6, 96)
    dataset = tmp_path / "dataset.txt"
    dataset.write_text("".join(f"{p.name}\n" for p in images))
    script = tmp_path / "convert.py"
    script.write_text(VENDOR_SCRIPT)
    out_npy = tmp_path / "out.npy"
    done = subprocess.run(
        [sys.executable, str(script), str(proto), str(weights), str(dataset), str(images[1]),
         str(tmp_path / "classifier.rknn"), str(out_npy)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().endswith("done")
    got = np.load(out_npy)
    bgr = np.asarray(Image.open(images[1]).convert("RGB"), np.float32)[:, :, ::-1]
    x = ((bgr - np.asarray([103.94, 116.78, 123.68])) / 58.82).transpose(2, 0, 1)[np.newaxis].astype(np.float32)
    want = net.reference({"data": x})["fc"]
    cos = float((got.ravel() @ want.ravel()) / (np.linalg.norm(got) * np.linalg.norm(want)))
    record_property("int8_cosine", round(cos, 5))
    print(f"int8 classifier vs float PyTorch: cosine {cos:.5f}")
    assert cos > 0.98
