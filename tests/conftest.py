"""Shared fixtures: real models from PyPI packages, built once per session."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

# Tests talk to agents on loopback only: mDNS is bound to 127.0.0.1 and no inventory file is read.
os.environ["RKFARM_MDNS_INTERFACES"] = "127.0.0.1"
os.environ["RKFARM_INVENTORY"] = os.devnull
os.environ.pop("RKFARM_AGENTS", None)

from agent_fixtures import AgentProcess

from rkfarm import RKNN
from rkfarm.samples import TextLine, text_lines
from rkfarm.zoo import packaged_model

CLS_SIZE = [1, 3, 48, 192]
CLS_MEAN = [[127.5, 127.5, 127.5]]
CLS_STD = [[127.5, 127.5, 127.5]]


@pytest.fixture(scope="session")
def cls_onnx() -> Path:
    """The PP-OCR text-direction classifier shipped in rapidocr-onnxruntime."""
    return packaged_model("ppocr-cls").path()


@pytest.fixture(scope="session")
def cls_lines() -> list[TextLine]:
    return text_lines(24, seed=7)


def build_cls(onnx_path: Path, out: Path, float_dtype: str = "float16") -> Path:
    with RKNN(raise_errors=True) as rknn:
        rknn.config(mean_values=CLS_MEAN, std_values=CLS_STD, float_dtype=float_dtype, target_platform="rk3588")
        rknn.load_onnx(str(onnx_path), input_size_list=[CLS_SIZE])
        rknn.build(do_quantization=False)
        rknn.export_rknn(str(out))
    return out


@pytest.fixture(scope="session")
def cls_package(cls_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The classifier built as a float16 package (the default precision)."""
    return build_cls(cls_onnx, tmp_path_factory.mktemp("pkg") / "cls_fp16.rkfm")


@pytest.fixture(scope="session")
def cls_package_fp32(cls_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_cls(cls_onnx, tmp_path_factory.mktemp("pkg") / "cls_fp32.rkfm", "float32")


@pytest.fixture()
def rknn() -> Iterator[RKNN]:
    r = RKNN(raise_errors=True)
    yield r
    r.release()


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))


def preprocess_cls(image_hwc: np.ndarray) -> np.ndarray:
    """What the vendor runtime does to a uint8 NHWC image for the classifier, written out by hand."""
    x = (image_hwc.astype(np.float32) - 127.5) / 127.5
    return x.transpose(2, 0, 1)[np.newaxis]


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    """One real agent for a test module, on 127.0.0.1, advertised on loopback."""
    root = tmp_path_factory.mktemp("agent")
    proc = AgentProcess(root / "store", f"test-{uuid.uuid4().hex[:8]}").start()
    yield proc
    proc.stop()


@pytest.fixture()
def make_agent(tmp_path: Path) -> Iterator[Callable[..., AgentProcess]]:
    """Start agents with custom options; all are stopped at the end of the test."""
    started: list[AgentProcess] = []

    def make(*extra: str, platform: str = "rk3588") -> AgentProcess:
        proc = AgentProcess(tmp_path / f"store{len(started)}", f"t{uuid.uuid4().hex[:8]}", *extra, platform=platform)
        started.append(proc.start())
        return proc

    yield make
    for proc in started:
        proc.stop()
