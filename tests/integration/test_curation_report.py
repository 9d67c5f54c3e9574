"""The dataset report, rendered by headless Chromium: what a person sees is on the page."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from curation.card import load_card
from curation.config import CurationConfig
from curation.curate import curate
from curation.sample import generate_sample_dataset
from ltx.buckets import BucketRules

DEFAULT = Path(__file__).resolve().parents[2] / "configs" / "curation" / "default.yaml"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]


def find_chromium() -> str:
    """Debian's chromium; installed here when missing and apt can (root, as in CI set-up)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "chromium"]):
            subprocess.run(cmd, capture_output=True, timeout=600, check=False)
        found = shutil.which("chromium")
    if not found:
        pytest.skip("chromium is not installed and apt-get cannot install it (needs root)")
    return found


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("report")
    generate_sample_dataset(root / "sample")
    cfg = CurationConfig.model_validate(yaml.safe_load(DEFAULT.read_text()))
    card = load_card(root / "sample" / "dataset.yaml")
    summary = curate(root / "sample" / "raw", root / "curated", card, cfg, BucketRules(32, 8))
    return root / "curated" / "report.html", summary


def render(browser: str, page: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    flags = [*FLAGS, f"--user-data-dir={tmp / 'profile'}", *args, page.as_uri()]
    return subprocess.run([browser, *flags], capture_output=True, text=True, timeout=120)


def test_report_renders_in_chromium(report: tuple[Path, dict], tmp_path: Path) -> None:
    page, summary = report
    browser = find_chromium()
    dom = render(browser, page, tmp_path, "--dump-dom").stdout
    sheet = dom[
        dom.index('id="contact-sheet"') : dom.index("</div>", dom.index('id="contact-sheet"'))
    ]
    assert sheet.count("<img") == summary["curated"] == 16
    assert sheet.count("data:image/jpeg;base64,") == 16  # self-contained: no external files
    assert re.search(r'data-key="clips">\s*16<', dom)
    quarantine = dom[dom.index('id="quarantine"') :]
    assert "mascot_09_blink.mp4" in quarantine and "too_short" in quarantine
    buckets = dom[dom.index('id="buckets"') : dom.index("</table>", dom.index('id="buckets"'))]
    assert "96x64x17" in buckets and "64x96x17" in buckets and "64x64x17" in buckets
    assert dom.count('class="bar"') == 10  # the duration histogram's bins
    shot = tmp_path / "report.png"
    render(browser, page, tmp_path, f"--screenshot={shot}", "--window-size=1200,1600")
    assert shot.is_file() and shot.stat().st_size > 20_000  # pixels were painted
