"""The quantization arithmetic, the streaming statistics, the calibration searches and the .quantization.cfg file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rkfarm.errors import ConfigError
from rkfarm.quant.calibrators import CALIBRATORS, EntropyCalibrator, MinMaxCalibrator, MseCalibrator
from rkfarm.quant.config_file import dump_quant_cfg, parse_quant_cfg, read_quant_cfg, write_quant_cfg
from rkfarm.quant.scheme import (
    activation_params,
    bias_params,
    dequantize_array,
    quantize_array,
    weight_params,
)
from rkfarm.quant.stats import MAX_BINS, TensorStats


@pytest.mark.parametrize(
    ("lo", "hi", "scale", "zero_point"),
    [
        (-1.0, 1.0, 2 / 255, 0),  # round(127.5) = 128 (half to even), 128 - 128
        (0.0, 6.0, 6 / 255, -128),  # ReLU6: real 0 is the lowest level
        (-6.0, 0.0, 6 / 255, 127),
        (-0.5, 2.0, 2.5 / 255, -77),  # round(0.5 / (2.5/255)) = round(51.0) = 51
        (1.0, 3.0, 3 / 255, -128),  # widened to include 0: [0, 3]
        (-3.0, -1.0, 3 / 255, 127),  # widened to include 0: [-3, 0]
    ],
)
def test_activation_parameters_follow_the_formula(lo: float, hi: float, scale: float, zero_point: int) -> None:
    p = activation_params(lo, hi)
    assert p.dtype == "int8" and p.axis is None and (p.qmin, p.qmax) == (-128, 127)
    assert p.scale[0] == np.float32(scale)
    assert p.zero_point[0] == zero_point
    # the recorded range is the grid's, and the formulas give the parameters back from it
    assert p.min[0] <= min(lo, 0.0) + float(p.scale[0]) / 2 and p.max[0] >= max(hi, 0.0) - float(p.scale[0]) / 2
    assert np.float32((p.max[0] - p.min[0]) / 255) == p.scale[0]
    assert np.round(-p.min[0] / float(p.scale[0])) - 128 == p.zero_point[0]
    # real 0 is exactly representable
    assert dequantize_array(quantize_array(0.0, p), p) == 0.0


def test_weights_are_symmetric_per_output_channel() -> None:
    w = np.array([[[[0.5, -1.0]]], [[[0.02, 0.01]]], [[[-3.0, 2.0]]]], np.float32)  # (3, 1, 1, 2)
    p = weight_params(w, axis=0)
    np.testing.assert_array_equal(p.scale, (np.array([1.0, 0.02, 3.0]) / 127).astype(np.float32))
    assert (p.zero_point == 0).all() and (p.qmin, p.qmax) == (-127, 127)
    q = quantize_array(w, p)
    assert q.dtype == np.int8
    assert q[0, 0, 0].tolist() == [64, -127] and q[2, 0, 0].tolist() == [-127, 85]
    assert np.abs(dequantize_array(q, p) - w).max() <= p.scale.max() / 2 + 1e-7
    per_tensor = weight_params(w, axis=None)
    assert per_tensor.scale.tolist() == [np.float32(3.0 / 127)] and per_tensor.qmethod == "layer"
    assert quantize_array(w, per_tensor)[1].tolist() == [[[1, 0]]]


def test_bias_is_int32_at_input_times_weight_scale() -> None:
    w = weight_params(np.array([[1.0], [0.5]], np.float32), axis=0)
    p = bias_params(np.float32(0.02), w)
    assert p.dtype == "int32" and p.axis == 0
    np.testing.assert_array_equal(p.scale, np.float32(0.02) * w.scale)
    q = quantize_array(np.array([0.3, -0.07], np.float32), p)
    assert q.dtype == np.int32
    np.testing.assert_array_equal(q, np.round(np.array([0.3, -0.07]) / p.scale.astype(np.float64)))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(-50, 50), st.floats(1e-3, 30), st.integers(1, 400)),
        min_size=1,
        max_size=5,
    ),
    st.integers(0, 2**31 - 1),
)
def test_streaming_histogram_counts_every_value_in_its_bin(batches: list[tuple[float, float, int]], seed: int) -> None:
    rng = np.random.default_rng(seed)
    stats = TensorStats(histogram=True)
    seen = []
    for centre, spread, count in batches:
        values = rng.normal(centre, spread, count).astype(np.float32)
        values[: count // 4] = 0.0  # exact zeros are counted apart
        stats.update(values)
        seen.append(values)
    everything = np.concatenate(seen)
    assert stats.counts is not None and stats.counts.size <= MAX_BINS
    assert stats.min == everything.min() and stats.max == everything.max()
    assert stats.zeros == int((everything == 0).sum())
    edges = stats.edges
    assert edges[0] <= min(everything.min(), 0) and edges[-1] > max(everything.max(), 0)
    expected, _ = np.histogram(everything.astype(np.float64), bins=edges)
    np.testing.assert_array_equal(stats.counts, expected)
    assert np.log2(stats.width) == int(np.log2(stats.width))  # a power of two, so merging is exact


def test_merged_histograms_equal_one_histogram_of_everything() -> None:
    rng = np.random.default_rng(3)
    a_values = rng.normal(0, 1, 5000).astype(np.float32)
    b_values = rng.normal(40, 5, 5000).astype(np.float32)
    a, b, both = TensorStats(True), TensorStats(True), TensorStats(True)
    a.update(a_values)
    b.update(b_values)
    both.update(np.concatenate([a_values, b_values]))
    merged = TensorStats.merged([a, b])
    assert merged.counts is not None and both.counts is not None
    assert (merged.min, merged.max, merged.count) == (both.min, both.max, both.count)
    expected, _ = np.histogram(np.concatenate([a_values, b_values]), bins=merged.edges)
    np.testing.assert_array_equal(merged.counts, expected)


def _calibrate(cls: type, values: np.ndarray) -> tuple[float, float]:
    calibrator = cls()
    for chunk in np.array_split(values, 7):
        calibrator.collect("t", chunk.reshape(1, -1, 1, 1))
    return calibrator.compute({"t": ["t"]})["t"]


def test_registry_names_are_the_vendor_algorithms() -> None:
    assert set(CALIBRATORS) == {"normal", "kl_divergence", "mmse"}
    assert CALIBRATORS["normal"] is MinMaxCalibrator


def test_searches_clip_a_long_tail_and_keep_a_uniform_range() -> None:
    rng = np.random.default_rng(0)
    laplace = rng.laplace(0, 1, 400_000).astype(np.float32)  # extremes near +-13 for this many samples
    lo, hi = _calibrate(MinMaxCalibrator, laplace)
    assert (lo, hi) == (float(laplace.min()), float(laplace.max())) and hi > 11 and lo < -11
    # the MSE-optimal 8-bit clipping of a Laplace(b=1) is about 9.9 (Banner et al., ACIQ)
    m_lo, m_hi = _calibrate(MseCalibrator, laplace)
    assert 8.5 < m_hi < 11.5 and -11.5 < m_lo < -8.5, (m_lo, m_hi)
    k_lo, k_hi = _calibrate(EntropyCalibrator, laplace)
    # KL clips too, but never more than 0.1% of the values on a side
    q_lo, q_hi = np.quantile(laplace, [0.001, 0.999])
    assert q_hi - 0.05 <= k_hi < hi - 0.5 and lo + 0.5 < k_lo <= q_lo + 0.05, (k_lo, k_hi, q_lo, q_hi)
    uniform = rng.uniform(-1, 3, 400_000).astype(np.float32)
    for cls in (MseCalibrator, EntropyCalibrator):
        c_lo, c_hi = _calibrate(cls, uniform)
        assert c_lo < -0.95 and c_hi > 2.9, (cls.name, c_lo, c_hi)  # nothing to gain by clipping


def test_kl_keeps_a_dense_cluster_of_large_values() -> None:
    """The PP-OCRv4 recognizer case: 1% of an activation sits at 7x the range of the rest."""
    rng = np.random.default_rng(2)
    bulk = rng.uniform(-0.044, 0.01, 990_000)
    cluster = rng.uniform(0.30, 0.42, 10_000)
    lo, hi = _calibrate(EntropyCalibrator, np.concatenate([bulk, cluster]).astype(np.float32))
    assert hi > 0.40 and lo < -0.04, (lo, hi)


def test_mse_search_finds_the_brute_force_optimum() -> None:
    rng = np.random.default_rng(1)
    values = np.concatenate([rng.exponential(1.0, 200_000), [60.0]]).astype(np.float32)  # one far outlier

    def error(hi: float) -> float:
        p = activation_params(0.0, hi)
        return float(np.mean((dequantize_array(quantize_array(values, p), p) - values) ** 2))

    best = min(error(hi) for hi in np.linspace(5.0, 60.0, 221))
    lo, hi = _calibrate(MseCalibrator, values)
    assert lo == 0.0
    assert error(hi) <= 1.02 * best, (hi, error(hi), best)
    assert error(hi) < 0.9 * error(60.0)  # and min/max is clearly worse


def test_non_finite_activations_are_named() -> None:
    calibrator = MinMaxCalibrator()
    with pytest.raises(Exception, match="'conv1'.*non-finite"):
        calibrator.collect("conv1", np.array([1.0, np.nan], np.float32))


def test_quantization_cfg_round_trips(tmp_path: Path) -> None:
    table = {
        "input": activation_params(-1.0, 1.0),
        "conv1.weight": weight_params(np.random.default_rng(0).normal(size=(4, 3, 3, 3)).astype(np.float32), 0),
        "relu1": activation_params(0.0, 5.3),
    }
    table["conv1.bias"] = bias_params(table["input"].scale[0], table["conv1.weight"])
    text = dump_quant_cfg(table)
    assert text.startswith("custom_quantize_layers: {}\nquantize_parameters:\n")
    parsed = parse_quant_cfg(text)
    assert list(parsed.parameters) == list(table)
    for name, params in table.items():
        assert parsed.parameters[name] == params, name
    assert dump_quant_cfg(parsed.parameters) == text
    path = write_quant_cfg(tmp_path / "model.quantization.cfg", table, {"relu1": "float16"})
    again = read_quant_cfg(path)
    assert again.custom_quantize_layers == {"relu1": "float16"}
    assert again.parameters["conv1.weight"].qmethod == "channel" and again.parameters["input"].qmethod == "layer"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("just a string", "quantize_parameters"),
        ("quantize_parameters:\n  t: {qtype: asymmetric_quantized}\n", "missing"),
        (
            "quantize_parameters:\n  t: {qtype: float, qmethod: layer, dtype: int8, min: [0], max: [1],"
            " scale: [1], zero_point: [0]}\n",
            "qtype",
        ),
        (
            "quantize_parameters:\n  t: {qtype: asymmetric_quantized, qmethod: layer, dtype: int8, min: [0, 1],"
            " max: [1, 2], scale: [1, 1], zero_point: [0, 0]}\n",
            "one scale",
        ),
        ("quantize_parameters: [\n", "YAML"),
    ],
)
def test_bad_quantization_cfg_is_explained(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_quant_cfg(text, "bad.cfg")
