"""The public API: `import hwkd` is light, every public name resolves, and the README's example
runs as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import hwkd

README = Path(__file__).resolve().parents[1] / "README.md"


def test_import_hwkd_loads_no_heavy_library() -> None:
    out = subprocess.run([sys.executable, "-c", "import sys, hwkd; "
                          "print(sorted(m for m in ('torch', 'tvm', 'optuna') if m in sys.modules))"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("name", hwkd.__all__)
def test_every_public_name_resolves(name: str) -> None:
    value = getattr(hwkd, name)
    assert value is not None
    if callable(value) and not isinstance(value, type):
        assert value.__doc__, f"hwkd.{name} has no docstring"


def test_the_api_functions_are_not_shadowed_by_modules() -> None:
    # importing every module must leave the functions in place (a submodule named like one would replace it)
    import hwkd.calibrator
    import hwkd.distillation.brief
    import hwkd.exporter
    import hwkd.reports
    import hwkd.searcher

    for name in ("search", "estimate", "report", "distill", "export", "calibrate"):
        assert callable(getattr(hwkd, name)) and getattr(hwkd, name).__module__ == "hwkd.api"


def test_bad_input_is_one_hwkd_error() -> None:
    with pytest.raises(hwkd.HwkdError, match="give one of arch"):
        hwkd.estimate("rpi4")
    with pytest.raises(hwkd.HwkdError, match="unknown device 'rpi9'"):
        hwkd.estimate("rpi9", space="nb201", arch="x")
    with pytest.raises(hwkd.HwkdError, match=r"--epochs 0: must be at least 1"):
        hwkd.distill("nowhere", 0, hwkd.FullConfig(epochs=0))


def _readme_example() -> str:
    blocks = re.findall(r"^## Python API\n.*?```python\n(.*?)```", README.read_text(), re.S | re.M)
    assert len(blocks) == 1, "the README's Python API section has one python block"
    return blocks[0]


@pytest.mark.slow
def test_the_readme_python_example_runs_as_written(tmp_path: Path, embedded, monkeypatch) -> None:
    import torch

    from hwkd.teachers import TeacherRecipe, default_teacher

    # hwkd's default teacher, already in the cache (narrower and briefer than the real recipe: a
    # cached teacher is used whatever recipe made it), so the example spends its time on itself
    cache = tmp_path / "cache"
    monkeypatch.setenv("HWKD_CACHE_DIR", str(cache))
    default_teacher(embedded, torch.device("cpu"), recipe=TeacherRecipe((16, 32, 64), 2000))
    env = {**os.environ, "HWKD_CACHE_DIR": str(cache)}
    out = subprocess.run([sys.executable, "-c", _readme_example()], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert re.match(r"trial \d+: \d+\.\d %, \d+\.\d{3} ms  C\d+:\|", lines[0])  # an nb201-widths id
    assert any(re.match(r"test accuracy after full distillation: \d+\.\d %", line) for line in lines)
    assert (tmp_path / "hwkd-runs" / "api-example" / "export").is_dir()
    assert re.match(r"\d+\.\d\d ms, \d+ KiB peak memory", lines[-1])
