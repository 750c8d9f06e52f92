"""The `cdsw` engine library: records inside an experiment run, a no-op with one warning
outside, one clear error for bad input. Run as a separate interpreter where a fresh import
matters (the warning is given once per process)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any, Dict, List

import pytest

import cdsw
from cdsw_agent.experiments import tracking

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def run_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Dict[str, Path]:
    files, records = tmp_path / "files", tmp_path / "tracking"
    files.mkdir()
    records.mkdir()
    monkeypatch.setenv(cdsw.ENV_EXPERIMENT_ID, "7")
    monkeypatch.setenv(cdsw.ENV_EXPERIMENT_DIR, str(records))
    monkeypatch.setenv(cdsw.ENV_FILES_DIR, str(files))
    monkeypatch.setenv(cdsw.ENV_MAX_FILE_BYTES, "10")
    monkeypatch.chdir(files)
    return {"files": files, "records": records / cdsw.RECORDS_FILE}


def _records(path: Path) -> List[Dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_inside_a_run_metrics_and_files_are_recorded(run_env: Dict[str, Path]) -> None:
    import numbers

    class Scalar(numbers.Real):  # what numpy scalars look like to the library
        def __float__(self) -> float:
            return 0.25
    Scalar.__abstractmethods__ = frozenset()  # type: ignore[misc]

    cdsw.track_metric("acc", 0.5)
    cdsw.track_metric("acc", 0.75)
    cdsw.track_metric("epochs", 3)
    cdsw.track_metric("note", "fine")
    cdsw.track_metric("np", Scalar())
    (run_env["files"] / "sub").mkdir()
    (run_env["files"] / "sub" / "m.bin").write_bytes(b"12345")
    cdsw.track_file("sub/m.bin")
    got = _records(run_env["records"])
    assert [(r.get("metric"), r.get("value"), r.get("file")) for r in got] == [
        ("acc", 0.5, None), ("acc", 0.75, None), ("epochs", 3, None), ("note", "fine", None),
        ("np", 0.25, None), (None, None, "sub/m.bin")]
    read = tracking.read(run_env["records"])
    assert read.metrics == {"acc": 0.75, "epochs": 3, "note": "fine", "np": 0.25}
    assert read.history["acc"] == [0.5, 0.75] and read.files == ["sub/m.bin"]


def test_bad_input_gets_one_clear_error(run_env: Dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="non-empty string"):
        cdsw.track_metric("", 1)
    with pytest.raises(TypeError, match="must be a number or a string, not dict"):
        cdsw.track_metric("x", {"a": 1})
    with pytest.raises(ValueError, match="not a finite number"):
        cdsw.track_metric("x", float("nan"))
    with pytest.raises(ValueError, match="at most 256 characters"):
        cdsw.track_metric("x", "y" * 257)
    with pytest.raises(ValueError, match="is not a file"):
        cdsw.track_file("missing.txt")
    (tmp_path / "outside.txt").write_text("x")
    with pytest.raises(ValueError, match="outside the project folder"):
        cdsw.track_file(str(tmp_path / "outside.txt"))
    os.symlink(tmp_path / "outside.txt", run_env["files"] / "link.txt")
    with pytest.raises(ValueError, match="outside the project folder"):
        cdsw.track_file("link.txt")
    (run_env["files"] / "big.bin").write_bytes(b"x" * 11)
    with pytest.raises(ValueError, match="big.bin is 11 bytes; tracked files may be at most 10"):
        cdsw.track_file("big.bin")
    assert not run_env["records"].exists()  # nothing was recorded


def test_outside_the_workbench_it_warns_once_and_does_nothing(tmp_path: Path) -> None:
    code = ("import warnings, cdsw\nwarnings.simplefilter('always')\n"
            "cdsw.track_metric('a', 1)\ncdsw.track_metric('a', 2)\ncdsw.track_file('x.txt')\n"
            "print('still running')\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDSW_EXPERIMENT")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "still running\n"
    assert proc.stderr.count("RuntimeWarning") == 1, proc.stderr
    assert "not running as a workbench experiment" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_library_runs_on_python_3_9(tmp_path: Path) -> None:
    """Engines and gateways may have an older Python than the master."""
    # CPython 3.9 from pyenv where there is one; else Debian's pypy3 (PyPy 7.3.11 speaks Python
    # 3.9), which scripts/ci/apt-packages.txt installs on every machine
    py39 = [str(p) for p in sorted(Path.home().glob(".pyenv/versions/3.9*/bin/python3"))]
    py39 += [p for p in [shutil.which("pypy3")] if p and subprocess.run(
        [p, "-c", "import sys; assert sys.version_info[:2] == (3, 9)"]).returncode == 0]
    assert py39, "no Python 3.9: install pypy3 (scripts/ci/setup_host.sh does) or pyenv's 3.9"
    for i, python in enumerate(py39):
        records = tmp_path / str(i)
        records.mkdir()
        env = dict(PYTHONPATH=str(ROOT), CDSW_EXPERIMENT_ID="1", CDSW_EXPERIMENT_DIR=str(records),
                   PATH=os.environ.get("PATH", ""))
        proc = subprocess.run([python, "-c", "import cdsw; cdsw.track_metric('v', 1.5)"],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, (python, proc.stderr)
        assert tracking.read(records / cdsw.RECORDS_FILE).metrics == {"v": 1.5}, python


def test_no_warning_inside_a_run(run_env: Dict[str, Path]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cdsw.track_metric("ok", 1)
