"""The Snakemake report in real headless Chromium, and the generated rule graphs in docs/audit.md."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
SECTIONS = ("1. Training", "2. Feature maps", "3. Mean MI per case", "4. All images", "5. Provenance",
            "6. Protocols")


def snakemake(root: Path, *args: str) -> str:
    result = subprocess.run([str(BIN / "snakemake"), "--cores", "2", *args], cwd=root, env=ENV,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def report(protocols_build, tmp_path_factory) -> Path:
    """report.html of a copy of the shared two-case, one-image tiny build of `all` and `protocols`: the
    article's figures and the protocols' findings."""
    root = shutil.copytree(protocols_build[0], tmp_path_factory.mktemp("report") / "tiny", symlinks=True)
    snakemake(root, "--report", "results/report.html", "all", "protocols")
    return root / "results/report.html"


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium, headless, driven through chromedriver."""
    if not (CHROMIUM and CHROMEDRIVER):
        message = "Debian's chromium and chromium-driver are needed (make test installs them as root)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
                 "--no-first-run", "--disable-component-update", "--disable-sync", "--window-size=1400,1000"):
        options.add_argument(flag)
    with tempfile.TemporaryDirectory() as profile:
        options.add_argument(f"--user-data-dir={profile}")
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        try:
            yield driver
        finally:
            driver.quit()


def test_every_figure_renders_in_chromium(report, browser):
    """Each figure embedded in the report decodes in the browser at its real size; the page is not blank."""
    browser.get(report.as_uri())
    decoded = browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const pngs = Object.values(results).filter(r => r.mime_type === 'image/png');
        Promise.all(pngs.map(r => new Promise(resolve => {
            const image = new Image();
            image.onload = () => resolve([r.filename, image.naturalWidth, image.naturalHeight]);
            image.onerror = () => resolve([r.filename, 0, 0]);
            image.src = r.data_uri;
        }))).then(done);""")
    sizes = {name: (width, height) for name, width, height in decoded}
    expected = {"loss.png", "maps_a_image10.png", "maps_c_image10.png", "chosen_mean_mi.png", "mi_distribution.png",
                "wins.png", "protocols.png"}
    assert set(sizes) == expected
    for name in expected:
        with Image.open(report.parent / "figures" / name) as on_disk:
            assert sizes[name] == on_disk.size, name
    screenshot = np.asarray(Image.open(io.BytesIO(browser.get_screenshot_as_png())).convert("L"))
    assert np.unique(screenshot).size > 20


def test_report_groups_figures_by_article_section(report, browser):
    """The navigation lists the article's sections, and the provenance summary is in the report."""
    browser.get(report.as_uri())
    text = browser.find_element("tag name", "body").text
    for section in SECTIONS:
        assert section in text
    names = browser.execute_script("return Object.values(results).map(r => r.filename)")
    assert {"provenance.txt", "cases.csv", "findings.md"} <= set(names)


def test_docs_rule_graphs_are_the_generated_ones():
    """docs/audit.md's two Mermaid graphs, of `all` and of `protocols`, have the nodes and edges
    `snakemake --rulegraph mermaid-js TARGET` prints now.

    Snakemake prints the edges in no fixed order, so the graphs are compared as sets of lines.
    """
    blocks = re.findall(r"```mermaid\n(.*?)\n```", (REPO / "docs/audit.md").read_text(), re.S)
    assert len(blocks) == 2
    for target, block in zip(("all", "protocols"), blocks):
        result = subprocess.run([str(BIN / "snakemake"), "--rulegraph", "mermaid-js", target], cwd=REPO, env=ENV,
                                capture_output=True, text=True, timeout=120, check=True)
        assert sorted(block.strip().splitlines()) == sorted(result.stdout.strip().splitlines()), target
