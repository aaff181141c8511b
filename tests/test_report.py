"""End to end: the quick sweep through the CLI, then report.html (self-contained, escaped)."""

from __future__ import annotations

import base64
import re

import pytest

from suite.cli import main
from suite.records import load_frame

pytestmark = pytest.mark.slow

INJECTION = '<script>alert("x")</script>'


def test_quick_sweep_and_report(tmp_path, capsys):
    config = tmp_path / "quick.toml"
    text = (open("suite/configs/quick.toml").read()
            .replace('description = "', f'description = "{INJECTION.replace(chr(34), "")} '))
    config.write_text(text)
    assert main(["run", "--config", str(config), "--results", str(tmp_path), "--run-id", "r1",
                 "--report", "--no-progress"]) == 0
    run_dir = tmp_path / "r1"
    frame = load_frame(run_dir)
    assert len(frame) == 12 and set(frame["status"]) == {"ok"}
    assert set(frame["backend"]) == {"unrolled", "ift-direct", "ift-cg"}

    html = (run_dir / "report.html").read_text()
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "http://" not in html.replace("http://www.w3.org", "")  # nothing fetched
    images = re.findall(r'src="data:image/svg\+xml;base64,([^"]+)"', html)
    assert images
    svg = base64.b64decode(images[0]).decode()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    assert "K (inner iterations)" in svg  # labelled axes
