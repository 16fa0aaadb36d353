"""Accuracy analysis of the real PP-OCR classifier: error_analysis.txt, the dumps, report.html, the runtime
columns from a real agent, and `rkfarm analyze`.

The int8 model is calibrated on 20 rendered text lines (seed 11); the analysed sample is another line.
"""

from __future__ import annotations

import json
import re
import tracemalloc
from dataclasses import astuple
from pathlib import Path

import numpy as np
import pytest
from agent_fixtures import AgentProcess
from PIL import Image
from quant_fixtures import write_dataset

from conftest import CLS_MEAN, CLS_SIZE, CLS_STD, preprocess_cls
from rkfarm import RKNN
from rkfarm.analysis import AnalysisResult, parse_error_analysis
from rkfarm.analysis.dumps import read_map
from rkfarm.cli import main
from rkfarm.errors import DatasetError, StateError
from rkfarm.samples import text_lines


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("cal"), [line.image for line in text_lines(20, seed=11)])


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sample") / "line.png"
    Image.fromarray(text_lines(1, seed=99)[0].image).save(path)
    return path


@pytest.fixture(scope="module")
def int8(cls_onnx: Path, dataset: Path) -> RKNN:
    rknn = RKNN(raise_errors=True)
    rknn.config(mean_values=CLS_MEAN, std_values=CLS_STD, target_platform="rk3588")
    rknn.load_onnx(str(cls_onnx), input_size_list=[CLS_SIZE])
    rknn.build(do_quantization=True, dataset=str(dataset))
    return rknn


@pytest.fixture(scope="module")
def analysed(int8: RKNN, sample: Path, tmp_path_factory: pytest.TempPathFactory) -> AnalysisResult:
    out = tmp_path_factory.mktemp("snapshot")
    assert int8.accuracy_analysis([str(sample)], output_dir=str(out)) == 0
    assert int8.analysis_result is not None
    return int8.analysis_result


def test_error_analysis_txt_reads_back_as_the_numbers_returned(analysed: AnalysisResult) -> None:
    assert analysed.output_dir is not None
    text = (analysed.output_dir / "error_analysis.txt").read_text()
    assert [line.startswith("#") for line in text.splitlines()[:4]] == [True, True, True, False]
    parsed = parse_error_analysis(text)
    assert len(parsed) == len(analysed.layers) == 111  # the input, every int8 tensor, the output
    for got, want in zip(parsed, analysed.layers):
        assert (got.index, got.op, got.name) == (want.index, want.op, want.name)
        assert got.entire_cos == pytest.approx(want.entire_cos, abs=5e-7)
        assert got.single_cos == pytest.approx(want.single_cos, abs=5e-7)
        assert got.entire_euc == pytest.approx(want.entire_euc, rel=5e-6, abs=1e-12)
        assert got.single_euc == pytest.approx(want.single_euc, rel=5e-6, abs=1e-12)
        assert got.runtime_cos is None
    first, conv = analysed.layers[:2]
    assert (first.op, first.name) == ("Input", "x") and conv.op == "Conv"
    assert first.single_cos == first.entire_cos < 1.0  # the input's own int8 rounding
    # the first quantized layer: alone it carries no accumulated error, so it is no worse than end to end
    assert conv.single_cos >= conv.entire_cos - 1e-4 and conv.single_cos > 0.999
    assert analysed.layers[-1].op == "Softmax" and analysed.layers[-1].entire_cos > 0.999
    assert min(e.single_cos for e in analysed.layers) > 0.99  # no layer is broken in a plain build


def test_dumps_hold_what_the_models_compute(analysed: AnalysisResult, int8: RKNN, sample: Path) -> None:
    root = analysed.output_dir
    assert root is not None
    stems = read_map(root)
    assert list(stems) == [e.name for e in analysed.layers]
    image = np.asarray(Image.open(sample).convert("RGB"))
    # named as the vendor names them: golden/<tensor>.txt, golden/npy/<tensor>.npy, with . / : ; as _
    assert all(stem == re.sub(r"[/:.;]", "_", name) for name, stem in stems.items())
    assert (root / "golden" / "x.txt").is_file() and (root / "simulator" / "npy" / "x.npy").is_file()
    golden_x = np.load(root / "golden" / "npy" / f"{stems['x']}.npy")
    np.testing.assert_allclose(golden_x, preprocess_cls(image), atol=1e-6)
    output = analysed.layers[-1].name
    int8.init_runtime()  # the simulator: the analysis's "entire" values are what it computes
    want = int8.inference([image])
    assert want is not None
    np.testing.assert_allclose(np.load(root / "simulator" / "npy" / f"{stems[output]}.npy"), want[0], atol=1e-6)
    for folder in ("golden", "simulator"):
        for name in (analysed.layers[5].name, output):
            array = np.load(root / folder / "npy" / f"{stems[name]}.npy")
            text = np.loadtxt(root / folder / f"{stems[name]}.txt", dtype=np.float64)
            assert text.shape == (array.size,)
            np.testing.assert_allclose(text, array.ravel(), atol=5e-7)
    assert len(list((root / "golden").glob("*.txt"))) == len(analysed.layers)


def test_report_is_self_contained_and_sortable(analysed: AnalysisResult) -> None:
    assert analysed.output_dir is not None
    page = (analysed.output_dir / "report.html").read_text()
    assert "<svg" in page and "<polyline" in page and "<script>" in page and "addEventListener('click'" in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page) and "@import" not in page  # opens offline
    assert page.count('<tr class="worst">') == 5 and page.count("<tr") == len(analysed.layers) + 1
    worst = analysed.worst(1)[0]
    assert f"<code>{worst.name}</code>" in page.split("<svg")[0]  # named above the plot


def test_runtime_columns_from_a_real_agent(int8: RKNN, sample: Path, agent: AgentProcess, tmp_path: Path) -> None:
    assert int8.accuracy_analysis([str(sample)], str(tmp_path), target="rk3588", device_id=agent.address) == 0
    result = int8.analysis_result
    assert result is not None and result.runtime is not None and agent.agent_id in result.runtime
    for e in result.layers:  # the agent runs the same ONNX Runtime kernels on the same instrumented model
        assert e.runtime_sim_cos is not None and e.runtime_sim_cos > 0.99999, e
        assert e.runtime_cos == pytest.approx(e.entire_cos, abs=1e-5), e
    parsed = parse_error_analysis((tmp_path / "error_analysis.txt").read_text())
    got = [v for p in parsed for v in astuple(p)[7:]]  # the runtime columns, as written
    assert got == pytest.approx([v for e in result.layers for v in astuple(e)[7:]], rel=5e-6, abs=5e-7)
    assert len(list((tmp_path / "runtime" / "npy").glob("*.npy"))) == len(result.layers)


def test_analysis_needs_the_float_and_the_int8_model(cls_package: Path, sample: Path, tmp_path: Path) -> None:
    rknn = RKNN(raise_errors=True)
    rknn.load_rknn(str(cls_package))
    with pytest.raises(StateError, match=r"after build\(do_quantization=True"):
        rknn.accuracy_analysis([str(sample)], str(tmp_path))


def test_bad_inputs_name_the_file(int8: RKNN, tmp_path: Path) -> None:
    fake = tmp_path / "fake.png"
    fake.write_bytes(b"not a picture")
    with pytest.raises(DatasetError, match=r"accuracy_analysis inputs: sample 1: .*fake\.png: not an image"):
        int8.accuracy_analysis([str(fake)], str(tmp_path))
    assert RKNN().accuracy_analysis([str(fake)], str(tmp_path)) == -1


def test_cli_prints_the_worst_layers(
    cls_onnx: Path, dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["analyze", str(cls_onnx), "--dataset", str(dataset), "--input-size", "1,3,48,192",
            "--mean", "127.5,127.5,127.5", "--std", "127.5,127.5,127.5", "-o", str(tmp_path), "--top", "3"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("worst 3 of 111 layers") and len(lines) == 6 and "error_analysis.txt" in lines[-1]
    assert main([*args, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    singles = sorted(layer["single_cos"] for layer in report["layers"])
    worst = {layer["name"]: layer for layer in report["layers"]}[report["worst"][0]]
    assert len(report["worst"]) == 3 and worst["single_cos"] == singles[0]
    assert report["worst"][0] in lines[2]  # the printed table has the same worst layer
    assert main(["analyze", str(cls_onnx), "--input-size", "1,3,48,192"]) == 1
    assert "needs --dataset" in capsys.readouterr().err


def test_memory_holds_one_sample_whatever_the_sample_count(cls_onnx: Path, dataset: Path) -> None:
    """Averaging over 16 samples peaks at the memory of one: each sample's tensors are dropped before the next."""
    from rkfarm import graph
    from rkfarm.analysis import LayerRunner, layer_errors
    from rkfarm.config import RknnConfig
    from rkfarm.frontends.onnx import load_onnx
    from rkfarm.quant import QuantOptions, calibrate, finish
    from rkfarm.quant.collect import model_batches
    from rkfarm.quant.dataset import CalibrationDataset
    from rkfarm.specs import input_specs

    cfg = RknnConfig.from_kwargs(mean_values=CLS_MEAN, std_values=CLS_STD)
    model = graph.infer_shapes(graph.simplify(load_onnx(cls_onnx, None, [CLS_SIZE], None, None).model, 3))
    options = QuantOptions.from_config(cfg)
    result = finish(calibrate(model, cfg, str(dataset), options), options)
    float_model = result.calibration.model
    runner = LayerRunner(float_model, result.model, result.analysed_tensors())
    data = CalibrationDataset(dataset, input_specs(float_model, cfg))
    one_sample_bytes = 4 * sum(v.size for v in runner.run(next(model_batches(data, float_model, 1))).golden.values())
    peaks = []
    for count in (1, 16):
        tracemalloc.start()
        errors = layer_errors(runner, model_batches(data, float_model, count))
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert len(errors) == 111
    assert peaks[1] < 1.1 * peaks[0] and peaks[0] < 4 * one_sample_bytes, (peaks, one_sample_bytes)
