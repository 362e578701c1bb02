"""A two-case tiny build of `all` and `protocols`: the protocols as wildcards of the same rules, its Snakemake
report in real headless Chromium; and the generated rule graphs in docs/audit.md."""

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
import pandas as pd
import yaml
from PIL import Image

from builds import edit, planned, set_params
from helpers import html_rows
from mifeatures.workflow.params import load_params, merge

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
def protocols_build(tmp_path_factory) -> tuple[Path, dict[str, bytes]]:
    """A two-case (a, c), one-image tiny build of `all`, then of `protocols` (two cases being the fewest the
    findings compare), and the bytes of every results file as `all` left them. The protocols' test and the report
    work on copies of it or only read it."""
    root = tmp_path_factory.mktemp("protocols") / "tiny"
    root.mkdir()
    for name in ("workflow", "src", "environment.yml"):
        (shutil.copytree if (REPO / name).is_dir() else shutil.copy)(REPO / name, root / name)
    params = merge(load_params([REPO / "params.yaml", REPO / "config/tiny.yaml"]),
                   {"cases": ["a", "c"], "figures": {"images": [10]}})
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    article = {}
    for target in ("all", "protocols"):
        result = subprocess.run([str(BIN / "snakemake"), target], cwd=root, env=ENV, capture_output=True, text=True,
                                timeout=900)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        if target == "all":
            article = {str(path.relative_to(root)): path.read_bytes()
                       for path in sorted((root / "results").rglob("*")) if path.is_file() and "logs" not in path.parts}
    return root, article


def test_protocols_and_seeds_are_wildcards_of_the_same_rules(protocols_build, tmp_path):
    """`snakemake protocols` runs the corrected protocol beside the article's run, whose outputs it
    leaves byte for byte; the findings read the same faithful numbers as the aggregate; a param of the
    corrected scoring reruns corrected jobs only; a second seed trains every (protocol, case) once more
    and leaves the article's figures current (on a copy of the shared two-case build of `all`, then
    `protocols`)."""
    project = shutil.copytree(protocols_build[0], tmp_path / "tiny", symlinks=True)
    article_outputs = protocols_build[1]
    cases = yaml.safe_load((project / "params.yaml").read_text())["cases"]
    after = {path: (project / path).read_bytes() for path in article_outputs}
    assert after == article_outputs and planned(project) == {}
    findings = pd.read_csv(project / "results/findings/cases.csv")
    faithful = findings[(findings["training"] == "faithful") & (findings["scoring"] == "faithful")]
    faithful = faithful.set_index("case")["mean_mi"]
    aggregate = pd.read_csv(project / "results/aggregate/cases.csv").set_index("case")["mean_mi"]
    pd.testing.assert_series_equal(faithful, aggregate, check_names=False, rtol=1e-12)
    assert set(zip(findings["training"], findings["scoring"])) == {
        (training, scoring) for training in ("faithful", "corrected") for scoring in ("faithful", "corrected")}
    findings_text = (project / "results/findings.md").read_text()
    assert "**One seed**: seed-level intervals and tests need at least 2 seeds" in findings_text
    corrected_scoring = {"score": 2 * len(cases), "findings": 1, "figure_protocols": 1, "protocols": 1}
    null = project / "src/mifeatures/core/information/estimators.py"
    original_null = edit(null, "return mutual_information_many(rolled, [maps] * len(rolled), bins).mean(axis=0)",
                         "return mutual_information_many(rolled, [maps] * len(rolled), bins).mean(0)")
    # the spatial null: the corrected scorer's jobs (of both trainings) and what reads them, nothing of the faithful one
    assert planned(project, target="protocols") == corrected_scoring
    assert planned(project) == {}
    null.write_text(original_null)
    set_params(project, {"score": {"null_shifts": 4}})
    assert planned(project, target="protocols") == corrected_scoring
    set_params(project, {"train": {"seeds": [78, 79]}})
    # seed 79: both trainings and both scorers of each case; seed 78: the corrected scorer again (null_shifts)
    assert planned(project, target="protocols") == {
        "train": 2 * len(cases), "score": 6 * len(cases), "crosscheck": 2 * len(cases), "findings": 1,
        "figure_protocols": 1, "protocols": 1}
    assert planned(project) == {}


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
    assert {"provenance.txt", "cases.html", "article_losses.html", "findings.md"} <= set(names)


def test_the_report_showed_its_tables_as_download_links(report, browser):
    """The per-case numbers and the article's losses are HTML tables, which the report shows in place, with the
    CSV's rows and rounded numbers; no CSV is in the report."""
    browser.get(report.as_uri())
    shown = browser.execute_script("return Object.values(results).map(r => [r.filename, r.mime_type])")
    assert not [name for name, _ in shown if name.endswith(".csv")]
    assert {("cases.html", "text/html"), ("article_losses.html", "text/html")} <= {tuple(each) for each in shown}
    results = report.parent
    for page, table in (("aggregate/cases.html", "aggregate/cases.csv"), ("article_losses.html", "article_losses.csv")):
        header, *rows = html_rows((results / page).read_text())
        assert header == list(pd.read_csv(results / table).columns) and len(rows) == len(pd.read_csv(results / table))


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
