"""What ships (issue 16, item 5): the sdist carries what `make test` needs, the wheel carries the license and an
SPDX expression, the board installer takes a wheel and says how to make one (rkfarm is not on PyPI)."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    out = tmp_path_factory.mktemp("dist")
    code = (
        "import sys, warnings\nwarnings.simplefilter('error', DeprecationWarning)\n"
        "from setuptools import build_meta as b\nout = sys.argv[1]  # the backend rewrites sys.argv\n"
        "print('SDIST', b.build_sdist(out))\nprint('WHEEL', b.build_wheel(out))\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    names = dict(line.split() for line in done.stdout.splitlines() if line.startswith(("SDIST", "WHEEL")))
    return out / names["SDIST"], out / names["WHEEL"], done.stdout + done.stderr


@pytest.mark.slow
def test_sdist_has_tests_data_and_deploy(dists: tuple[Path, Path, str]) -> None:
    sdist, _, log = dists
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    needed = [
        "LICENSE",
        "Makefile",
        "tests/conftest.py",
        "tests/agent_fixtures.py",
        "tests/data/vendor_script.py",
        "deploy/install-agent.sh",
        "deploy/rkfarm-agent.service",
        "proto/rkfarm_proto/v1/agent.proto",
    ]
    missing = [n for n in needed if n not in names]
    assert not missing, missing
    deprecated = [ln for ln in log.splitlines() if "licen" in ln.lower() and "deprecat" in ln.lower()]
    assert not deprecated, deprecated


@pytest.mark.slow
def test_wheel_has_license_and_spdx_expression(dists: tuple[Path, Path, str]) -> None:
    _, wheel, _ = dists
    with zipfile.ZipFile(wheel) as zf:
        meta_name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        meta = zf.read(meta_name).decode()
        licenses = [n for n in zf.namelist() if n.endswith("licenses/LICENSE")]
        assert licenses and b"Apache License" in zf.read(licenses[0])
    assert "License-Expression: Apache-2.0" in meta


def test_license_is_apache_2() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'license = "Apache-2.0"' in pyproject and 'license-files = ["LICENSE"]' in pyproject


def test_install_agent_needs_a_wheel_and_says_how_to_make_one(tmp_path: Path) -> None:
    script = ROOT / "deploy" / "install-agent.sh"
    copy = tmp_path / "deploy"
    copy.mkdir()
    (copy / "install-agent.sh").write_text(script.read_text())
    done = subprocess.run(["bash", str(copy / "install-agent.sh")], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == 2
    assert "not on PyPI" in done.stderr and "pip wheel . --no-deps" in done.stderr
    readme = (ROOT / "README.md").read_text()
    assert "from PyPI on the board" not in readme and "pip wheel . --no-deps" in readme
