"""The Python snippets of the README and docs run as written (in a fresh process and folder)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# docs/tuning.md's snippet runs a 16-trial search: far beyond a test's budget, not run here
RUN = ["README.md", "docs/control.md", "docs/report.md", "docs/metrics.md", "docs/nir.md",
       "docs/hardware.md", "docs/own-model.md", "docs/events.md", "docs/conversion.md",
       "docs/language.md"]  # fmt: skip


def snippets(name: str) -> list[str]:
    """The ```python blocks of one Markdown file."""
    return re.findall(r"```python\n(.*?)```", (ROOT / name).read_text(), re.S)


@pytest.mark.parametrize("name", RUN)
def test_python_snippets_run_as_written(name, tmp_path):
    blocks = snippets(name)
    assert blocks, f"{name} has no python snippet"
    for code in blocks:
        r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                           text=True, timeout=300)  # fmt: skip
        assert r.returncode == 0, r.stderr[-2000:]
