"""The accuracy report and the perf report as a person sees them: rendered in headless Chromium.

A small CNN built here is quantized and analysed on the simulator (RKNN.init_runtime() with no target); the
"board" series of the accuracy report comes from the same analysis run through a runtime opener that opens the
simulator — the records a board agent returns, without starting one. The pages are loaded at 800 px wide by
Debian's chromium through chromedriver (selenium): no console error, one point (bar) per layer, nothing cut
off, and the table sorts. The Chrome trace is checked as JSON: one complete event per layer per profiled run.

Without chromium, chromedriver or selenium the browser tests skip and say why (.ci/run installs them).
"""

from __future__ import annotations

import io
import itertools
import json
import math
import re
import shutil
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx_models import make_model
from quant_fixtures import write_dataset

import rkfarm.targets
from rkfarm import RKNN
from rkfarm.analysis import AnalysisResult, LayerError, render_report
from rkfarm.cli import main
from rkfarm.errors import RkfarmError
from rkfarm.html_charts import WORST_COLOUR
from rkfarm.perf import PerfData, PerfReport
from rkfarm.perf_report import TID_LAYERS, TID_PROFILED, TID_TIMED, chrome_trace, histogram
from rkfarm.quant.calibrators import Calibrator, EntropyCalibrator, MinMaxCalibrator, MseCalibrator
from rkfarm.runtime import Runtime
from rkfarm.targets import open_simulator
from rkfarm_proto.package import ModelPackage
from rkfarm_proto.records import LayerTiming, LoadOptions

SIZE = 24
WIDTH_PX = 800


def _tiny_cnn(path: Path) -> Path:
    """Conv-Relu-Conv-HardSwish-MaxPool-Conv-GAP-Flatten-Gemm-Softmax, seeded weights."""
    rng = np.random.default_rng(16)

    def weight(name: str, *shape: int) -> onnx.TensorProto:
        scale = 1.0 / math.sqrt(float(np.prod(shape[1:])))
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    def bias(name: str, n: int) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(n) * 0.1).astype(np.float32), name)

    inits = [
        weight("w1", 8, 3, 3, 3), bias("b1", 8), weight("w2", 16, 8, 3, 3), bias("b2", 16),
        weight("w3", 16, 16, 3, 3), bias("b3", 16), weight("fc", 4, 16), bias("fcb", 4),
    ]  # fmt: skip
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("HardSigmoid", ["c2"], ["h2"], name="hsig2", alpha=1.0 / 6, beta=0.5),
        helper.make_node("Mul", ["c2", "h2"], ["s2"], name="hswish2"),
        helper.make_node("MaxPool", ["s2"], ["p2"], name="pool2", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p2", "w3", "b3"], ["c3"], name="conv3", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c3"], ["r3"], name="relu3"),
        helper.make_node("GlobalAveragePool", ["r3"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc", "fcb"], ["logits"], name="fc", transB=1),
        helper.make_node("Softmax", ["logits"], ["y"], name="softmax", axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        inits,
    )
    model = make_model(graph, 17)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def _images(count: int, seed: int) -> list[np.ndarray]:
    """Smooth random colour fields with a few edges: something a CNN's activations vary on."""
    rng = np.random.default_rng(seed)
    out = []
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    for _ in range(count):
        a, b, c = rng.uniform(-3, 3, size=3)
        base = np.stack([np.sin(a * xx + b * yy + c + k) for k in range(3)], axis=-1)
        noise = rng.normal(0, 0.15, size=(SIZE, SIZE, 3))
        out.append(np.clip((base + noise) * 90 + 128, 0, 255).astype(np.uint8))
    return out


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny_cnn(tmp_path_factory.mktemp("model") / "tiny_cnn.onnx")


@pytest.fixture(scope="module")
def int8(model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RKNN]:
    dataset = write_dataset(tmp_path_factory.mktemp("cal"), _images(12, seed=3))
    rknn = RKNN(raise_errors=True)
    rknn.config(mean_values=[[127.5] * 3], std_values=[[127.5] * 3], target_platform="rk3588")
    rknn.load_onnx(str(model), input_size_list=[[1, 3, SIZE, SIZE]])
    rknn.build(do_quantization=True, dataset=str(dataset))
    yield rknn
    rknn.release()


def _simulated_board(package: ModelPackage, platform: str, device_id: str | None, options: LoadOptions) -> Runtime:
    """What ``open_agent`` returns, opened in this process: an agent's onnxruntime backend is the same code."""
    runtime = open_simulator(package, options)
    runtime.where = f"simulated board {platform} (the agent's onnxruntime backend in this process)"
    return runtime


@pytest.fixture(scope="module")
def analysed(int8: RKNN, tmp_path_factory: pytest.TempPathFactory) -> AnalysisResult:
    sample = write_dataset(tmp_path_factory.mktemp("sample"), _images(1, seed=99)).parent / "0000.png"
    out = tmp_path_factory.mktemp("snapshot")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rkfarm.targets, "open_agent", _simulated_board)
        assert int8.accuracy_analysis([str(sample)], output_dir=str(out), target="rk3588") == 0
    assert int8.analysis_result is not None
    return int8.analysis_result


@pytest.fixture(scope="module")
def perf(int8: RKNN, tmp_path_factory: pytest.TempPathFactory) -> PerfReport:
    package = tmp_path_factory.mktemp("pkg") / "tiny.rkfm"
    assert int8.export_rknn(str(package)) == 0
    rknn = RKNN(raise_errors=True)
    rknn.load_rknn(str(package))
    rknn.init_runtime(perf_debug=True)  # no target: the simulator
    report = rknn.eval_perf(is_print=False, runs=40, warmup=5)
    rknn.release()
    assert report is not None and report.layers and report.profiled_run_times_us
    return report


# --- the browser ----------------------------------------------------------------------------------------------


def _browser_skip_reason() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    if not shutil.which("chromium"):
        return "Debian's chromium is not installed (apt-get install -y chromium chromium-driver; .ci/run does it)"
    if not shutil.which("chromedriver"):
        return "chromedriver is not installed (apt-get install -y chromium-driver; .ci/run does it)"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    reason = _browser_skip_reason()
    if reason:
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(shutil.which("chromium"))
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={WIDTH_PX},900", "--no-first-run", "--disable-extensions"):  # fmt: skip
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:  # an explicit driver path: selenium does not look for (or download) one
        driver = webdriver.Chrome(options=options, service=Service(str(shutil.which("chromedriver"))))
    except WebDriverException as exc:
        pytest.skip(f"chromium did not start headless: {str(exc).splitlines()[0]}")
    try:
        yield driver
    finally:
        driver.quit()


def _open(browser: Any, path: Path) -> list[dict[str, Any]]:
    """Load ``path``; returns the console's errors (level SEVERE: console.error, uncaught exceptions, failed loads)."""
    browser.get_log("browser")  # drop what an earlier page logged
    browser.get(path.resolve().as_uri())
    assert browser.execute_script("return document.readyState") == "complete"
    return [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]


def _count(browser: Any, selector: str) -> int:
    return int(browser.execute_script("return document.querySelectorAll(arguments[0]).length", selector))


def _assert_not_clipped(browser: Any) -> None:
    """The page itself never scrolls sideways at 800 px; a chart wider than its box scrolls inside its box."""
    layout = browser.execute_script(
        """return {inner: window.innerWidth, page: document.documentElement.scrollWidth,
                   charts: Array.from(document.querySelectorAll('.chart')).map(function(c){
                     var svg = c.querySelector('svg').getBoundingClientRect();
                     return {box: c.clientWidth, scroll: c.scrollWidth, svg: svg.width,
                             right: c.getBoundingClientRect().right};})}"""
    )
    assert WIDTH_PX - 20 <= layout["inner"] <= WIDTH_PX  # the window asked for (less a scroll bar)
    assert layout["page"] <= layout["inner"], layout
    for chart in layout["charts"]:
        assert chart["right"] <= layout["inner"] + 0.5, chart
        assert chart["scroll"] + 1 >= chart["svg"], chart  # the whole chart is reachable in its box


def _no_network(browser: Any) -> None:
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0


# --- accuracy report --------------------------------------------------------------------------------------------


def test_accuracy_report_in_chromium(browser: Any, analysed: AnalysisResult) -> None:
    assert analysed.output_dir is not None and analysed.runtime is not None
    layers = analysed.layers
    assert len(layers) >= 10 and all(e.runtime_cos is not None for e in layers)
    errors = _open(browser, analysed.output_dir / "report.html")
    assert errors == []
    _no_network(browser)
    for chart in ("cos", "logerr"):  # one point per layer per series, in both charts
        for series in ("entire", "single", "board"):
            assert _count(browser, f"svg.{chart} circle.pt[data-series={series}]") == len(layers), (chart, series)
        shown = browser.execute_script(
            "return Array.from(document.querySelectorAll(arguments[0])).map(function(c){return +c.dataset.index})",
            f"svg.{chart} circle.pt[data-series=single]",
        )
        assert shown == [e.index for e in layers]
        labels = browser.execute_script(
            "return Array.from(document.querySelectorAll(arguments[0])).map(function(t){return t.textContent})",
            f"svg.{chart} text.xlabel",
        )
        assert labels and labels[0] == str(layers[0].index) and set(labels) <= {str(e.index) for e in layers}
        assert _count(browser, f"svg.{chart} line.xtick") == len(layers)  # a tick per layer
    _assert_not_clipped(browser)
    # the worst layer is the lowest point of the cosine chart and the highest of the log chart
    worst = analysed.worst(1)[0]
    heights = browser.execute_script(
        """var out = {};
           ['cos', 'logerr'].forEach(function(chart){
             out[chart] = Array.from(document.querySelectorAll('svg.' + chart + ' circle.pt[data-series=single]'))
               .map(function(c){ var r = c.getBoundingClientRect(); return [+c.dataset.index, r.top + r.height / 2]; });
           });
           return out;"""
    )
    # by the points' centres (the worst are drawn larger), to the 0.1 px the page gives them: layers whose cosines
    # differ by less than that share a height
    cos_y, log_y = (dict((int(i), float(y)) for i, y in heights[chart]) for chart in ("cos", "logerr"))
    assert cos_y[worst.index] >= max(cos_y.values()) - 0.15, (worst.index, cos_y)
    assert log_y[worst.index] <= min(log_y.values()) + 0.15, (worst.index, log_y)
    worst_marks = _count(browser, f"svg.logerr circle.pt[data-series=single][stroke='{WORST_COLOUR}']")
    assert worst_marks == min(5, len(layers))
    # clicking "single cos" sorts the table: its first row is the worst layer
    header = browser.find_element("xpath", "//th[text()='single cos']")
    header.click()
    first = browser.execute_script("return document.querySelector('tbody tr td:nth-child(3)').textContent")
    assert first == worst.name
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []


def _synthetic(count: int) -> AnalysisResult:
    """Many layers with known cosines, for the layout: errors growing with depth, one bad layer."""
    layers = []
    for i in range(count):
        single = 1.0 - 1e-5 * (1 + i % 7) - (0.02 if i == count // 3 else 0.0)
        layers.append(LayerError(i, "Conv", f"layer_{i}", 1.0 - 1e-4 * (1 + i / 10), 0.1, single, 0.01))
    return AnalysisResult(layers, 1, "synthetic")


def test_a_long_model_scrolls_in_its_box_not_the_page(browser: Any, tmp_path: Path) -> None:
    result = _synthetic(400)
    page = tmp_path / "report.html"
    page.write_text(render_report(result))
    assert _open(browser, page) == []
    assert _count(browser, "svg.cos circle.pt[data-series=single]") == 400
    assert _count(browser, "circle.pt[data-series=board]") == 0  # no board: no board series
    _assert_not_clipped(browser)
    boxes = browser.execute_script(
        "return Array.from(document.querySelectorAll('.chart')).map(function(c){return c.scrollWidth > c.clientWidth})"
    )
    assert boxes == [True, True]  # 400 layers: each chart scrolls sideways, a few px per layer
    step = browser.execute_script(
        """var p = document.querySelectorAll('svg.cos circle.pt[data-series=single]');
           return p[1].getBoundingClientRect().left - p[0].getBoundingClientRect().left;"""
    )
    assert step >= 4.0


def test_log_view_places_each_layer_at_its_own_error(analysed: AnalysisResult) -> None:
    """The log chart's points sit where log10(1 - cos) puts them on its labelled axis (SVG units)."""
    page = render_report(analysed)
    chart = page.split('class="accuracy logerr"')[1].split("</svg>")[0]
    ticks = [(float(y), int(d)) for y, d in re.findall(r'class="ytick" x="[\d.]+" y="([\d.]+)"[^>]*>1e(-?\d+)<', chart)]
    (y_a, d_a), (y_b, d_b) = ticks[0], ticks[-1]
    per_decade = (y_a - 4 - (y_b - 4)) / (d_b - d_a)
    points = re.findall(
        r'data-series="single" data-index="(\d+)" cx="[\d.]+" cy="([\d.]+)" r="[\d.]+" fill="([^"]+)"', chart
    )
    by_index = {e.index: e for e in analysed.layers}
    assert len(points) == len(analysed.layers)
    for index, cy, fill in points:
        gap = 1.0 - by_index[int(index)].single_cos
        if fill == "#fff":  # hollow: on the floor, no measurable error
            assert gap <= 10.0**d_a
            continue
        want = (y_a - 4) - (math.log10(gap) - d_a) * per_decade
        assert float(cy) == pytest.approx(want, abs=0.11), index


# --- perf report ------------------------------------------------------------------------------------------------


def test_perf_report_in_chromium(browser: Any, perf: PerfReport, tmp_path: Path) -> None:
    path = perf.to_html(tmp_path / "perf.html", title="tiny.rkfm")
    assert _open(browser, path) == []
    _no_network(browser)
    assert _count(browser, "svg.layers rect.bar") == len(perf.layers)
    bars = browser.execute_script(
        """return Array.from(document.querySelectorAll('svg.layers rect.bar')).map(function(r){
             return {us: +r.dataset.us, op: r.dataset.op, h: r.getBoundingClientRect().height};})"""
    )
    assert [b["us"] for b in bars] == pytest.approx([layer.time_us for layer in perf.layers], rel=1e-12)
    assert [b["op"] for b in bars] == [layer.op_type for layer in perf.layers]
    tallest = max(bars, key=lambda b: b["us"])
    for bar in bars:  # heights in proportion to the times (half a pixel of rounding)
        assert bar["h"] == pytest.approx(tallest["h"] * bar["us"] / tallest["us"], abs=0.6)
    calls = Counter(layer.op_type for layer in perf.layers)
    ops = browser.execute_script(
        """return Array.from(document.querySelectorAll('svg.ops rect.opbar')).map(function(r){
             return [r.dataset.op, +r.dataset.calls, +r.dataset.us];})"""
    )
    assert {op: n for op, n, _ in ops} == dict(calls)
    totals = {op: sum(layer.time_us for layer in perf.layers if layer.op_type == op) for op in calls}
    assert [t for _, _, t in ops] == pytest.approx(sorted(totals.values(), reverse=True), rel=1e-9)
    counts = browser.execute_script(
        "return Array.from(document.querySelectorAll('svg.hist rect.hist')).map(function(r){return +r.dataset.count})"
    )
    assert sum(counts) == perf.stats.runs == len(perf.run_times_us) == 40
    assert _count(browser, "table.layers tbody tr") == len(perf.layers)
    _assert_not_clipped(browser)
    browser.find_element("xpath", "//table[contains(@class,'layers')]//th[text()='time (us)']").click()
    browser.find_element("xpath", "//table[contains(@class,'layers')]//th[text()='time (us)']").click()
    slowest = browser.execute_script(
        "return document.querySelector('table.layers tbody tr td:nth-child(3)').textContent"
    )
    assert slowest == max(perf.layers, key=lambda layer: layer.time_us).name
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []


def test_perf_report_without_layer_times(browser: Any, tmp_path: Path) -> None:
    report = PerfReport(PerfData(run_times_us=[100.0, 120.0, 110.0, 400.0], where="test"))
    path = report.to_html(tmp_path / "plain.html")
    assert _open(browser, path) == []
    assert _count(browser, "rect.bar") == 0 and "--perf-debug" in browser.page_source
    counts = browser.execute_script(
        "return Array.from(document.querySelectorAll('rect.hist')).map(function(r){return +r.dataset.count})"
    )
    assert sum(counts) == 4
    _assert_not_clipped(browser)


# --- Chrome trace -----------------------------------------------------------------------------------------------


def _complete(trace: dict[str, Any], tid: int) -> list[dict[str, Any]]:
    return [e for e in trace["traceEvents"] if e["ph"] == "X" and e["tid"] == tid]


def test_chrome_trace_has_a_layer_event_per_layer_per_profiled_run(perf: PerfReport, tmp_path: Path) -> None:
    path = perf.to_chrome_trace(tmp_path / "trace.json", title="tiny.rkfm")
    trace = json.loads(path.read_text())
    assert set(trace) >= {"traceEvents"} and trace["displayTimeUnit"] == "ms"
    events = trace["traceEvents"]
    assert {e["ph"] for e in events} == {"X", "M"}
    for e in events:
        assert isinstance(e["pid"], int) and isinstance(e.get("tid", 0), int) and isinstance(e["name"], str)
        if e["ph"] == "X":
            assert e["ts"] >= 0 and e["dur"] >= 0 and isinstance(e["args"], dict)
    timed, runs, layers = (_complete(trace, tid) for tid in (TID_TIMED, TID_PROFILED, TID_LAYERS))
    assert [e["dur"] for e in timed] == pytest.approx(perf.run_times_us, abs=1e-3)
    assert [e["dur"] for e in runs] == pytest.approx(perf.profiled_run_times_us, abs=1e-3)
    assert len(layers) == len(perf.layers) * len(perf.profiled_run_times_us)
    for k, run in enumerate(runs):  # each profiled run's layers, in graph order, starting with the run
        mine = layers[k * len(perf.layers) : (k + 1) * len(perf.layers)]
        assert [e["name"] for e in mine] == [layer.name for layer in perf.layers]
        assert [e["dur"] for e in mine] == pytest.approx([layer.time_us for layer in perf.layers], abs=1e-3)
        assert mine[0]["ts"] == pytest.approx(run["ts"], abs=1e-3)
        assert all(e["args"]["op_type"] == layer.op_type for e, layer in zip(mine, perf.layers))
    for lane in (timed, runs, layers):  # no two events of one thread overlap: every viewer nests them cleanly
        for a, b in itertools.pairwise(lane):
            assert a["ts"] + a["dur"] <= b["ts"] + 2e-3
    names = {e["args"]["name"] for e in events if e["ph"] == "M"}
    assert "timed runs" in names and "profiled runs" in names


def test_chrome_trace_without_layer_times_has_the_timed_runs_only() -> None:
    trace = chrome_trace(PerfReport(PerfData(run_times_us=[5.0, 7.0])))
    assert [(e["ts"], e["dur"]) for e in trace["traceEvents"] if e["ph"] == "X"] == [(0.0, 5.0), (5.0, 7.0)]


def test_trace_lays_runs_apart_when_layers_outlast_their_run() -> None:
    layers = [LayerTiming(i, "Conv", "float32", "CPU", "", "", 30.0, f"l{i}") for i in range(3)]
    report = PerfReport(PerfData([50.0], layers, "x", profiled_run_times_us=[60.0, 80.0]))
    trace = chrome_trace(report)
    runs, lanes = _complete(trace, TID_PROFILED), _complete(trace, TID_LAYERS)
    assert [r["ts"] for r in runs] == [50.0, 50.0 + 90.0]  # 90: the layers' sum, longer than the 60 µs run
    assert [e["ts"] for e in lanes] == [50.0, 80.0, 110.0, 140.0, 170.0, 200.0]


def test_histogram_counts_every_run_once() -> None:
    rng = np.random.default_rng(5)
    samples = list(rng.lognormal(7.0, 0.3, size=500))
    edges, counts = histogram(samples)
    assert sum(counts) == 500 and len(edges) == len(counts) + 1 and len(counts) <= 40
    want, _ = np.histogram(samples, bins=edges)
    assert list(want) == counts  # numpy's own binning of the same edges
    assert histogram([3.0, 3.0])[1] == [2]


# --- CLI --------------------------------------------------------------------------------------------------------


def test_cli_perf_writes_html_and_trace(int8: RKNN, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    package = tmp_path / "tiny.rkfm"
    assert int8.export_rknn(str(package)) == 0
    html_out, trace_out = tmp_path / "perf.html", tmp_path / "perf.json"
    argv = ["perf", str(package), "--perf-debug", "--runs", "12", "--json", "--html", str(html_out)]
    assert main([*argv, "--trace", str(trace_out)]) == 0
    captured = capsys.readouterr()
    printed = json.loads(captured.out)  # stdout stays JSON; the written files are named on stderr
    assert f"wrote {html_out}" in captured.err and f"wrote {trace_out}" in captured.err
    assert len(printed["run_times_us"]) == 12
    page = html_out.read_text()
    assert page.count('class="bar"') == len(printed["layers"]) > 0
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    trace = json.loads(trace_out.read_text())
    per_layer = [e for e in trace["traceEvents"] if e["ph"] == "X" and e["tid"] == TID_LAYERS]
    assert len(per_layer) == len(printed["layers"]) * len(printed["profiled_run_times_us"])


def test_cli_perf_unwritable_html_is_one_line(int8: RKNN, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    package = tmp_path / "tiny.rkfm"
    assert int8.export_rknn(str(package)) == 0
    code = main(["perf", str(package), "--runs", "2", "--html", str(tmp_path / "missing" / "perf.html")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and "cannot write" in err[0] and "missing" in err[0]


def test_unwritable_trace_raises_an_rkfarm_error(tmp_path: Path) -> None:
    report = PerfReport(PerfData(run_times_us=[1.0]))
    with pytest.raises(RkfarmError, match="cannot write"):
        report.to_chrome_trace(tmp_path / "no" / "such" / "dir.json")


# --- progress bars ----------------------------------------------------------------------------------------------


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("calibrator", [EntropyCalibrator, MseCalibrator, MinMaxCalibrator])
def test_range_search_shows_progress_on_a_terminal_only(
    calibrator: type[Calibrator], monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(1)
    groups = {f"t{i}": [f"t{i}"] for i in range(3)}
    for stream in (_Terminal(), io.StringIO()):
        monkeypatch.setattr(sys, "stderr", stream)
        cal = calibrator()
        for name in groups:
            cal.collect(name, rng.normal(0, 1, size=4096).astype(np.float32))
        ranges = cal.compute(groups)
        assert set(ranges) == set(groups)
        shown = stream.getvalue()
        if isinstance(stream, _Terminal) and cal.histogram:  # KL / MMSE: a bar naming the search
            assert f"{cal.name} range search" in shown and "/3 [" in shown  # one step per tensor group
        else:  # not a terminal, or min/max (instant): nothing
            assert shown == ""


def test_upload_bar_counts_bytes_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    from rkfarm.remote.client import CHUNK_BYTES, _upload_bar

    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    total = 3 * CHUNK_BYTES
    with _upload_bar(total, CHUNK_BYTES, "upload abc to 127.0.0.1:1") as bar:  # resumed after one chunk
        bar.update(CHUNK_BYTES)
        bar.update(CHUNK_BYTES)
    assert "upload abc" in terminal.getvalue() and "4.00M/12.0M" in terminal.getvalue()  # starts where resumed
    small = _Terminal()
    monkeypatch.setattr(sys, "stderr", small)
    with _upload_bar(CHUNK_BYTES, 0, "small") as bar:  # one chunk: no bar
        bar.update(CHUNK_BYTES)
    quiet = io.StringIO()
    monkeypatch.setattr(sys, "stderr", quiet)
    with _upload_bar(total, 0, "piped") as bar:  # not a terminal: no bar
        bar.update(total)
    assert small.getvalue() == "" and quiet.getvalue() == ""
