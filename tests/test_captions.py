"""The report's captions say what the code does: each claim one can check mechanically, checked."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import jinja2
import pytest

from mifeatures.core.statistics import findings_report
from mifeatures.workflow.params import load_params

REPO = Path(__file__).resolve().parents[1]
REPORT = REPO / "workflow/report"


def rendered(name: str, *configs: str, **wildcards) -> str:
    """The caption as Snakemake's report renders it (Jinja2 over ``snakemake.config``) under ``configs``."""
    config = load_params([REPO / "params.yaml", *(REPO / config for config in configs)])
    snakemake = SimpleNamespace(config=config, wildcards=SimpleNamespace(**wildcards))
    return jinja2.Template((REPORT / name).read_text()).render(snakemake=snakemake)


def test_the_intro_read_1_epochs_and_showed_a_python_list():
    text = rendered("workflow.rst", "config/tiny.yaml")
    assert "1 epoch in batches of 10" in text and "1 epochs" not in text
    assert "['a'" not in text and "a, b, c, d" in text
    assert "4 epochs" not in rendered("workflow.rst") and "2 epochs in batches of 10" in rendered("workflow.rst")


@pytest.mark.parametrize("name", sorted(path.name for path in REPORT.glob("*.rst")))
def test_no_caption_shows_a_python_list_or_an_undefined_reference(name):
    text = rendered(name, case="a", image="10")
    assert not re.search(r"\['\w", text), text
    assert "known flaw" not in text  # cited a numbered list defined nowhere in the report


def test_the_interval_each_caption_names_is_the_one_the_findings_compute():
    """findings.rst and protocols.rst described a "bootstrap interval (seeds and images resampled together)"
    that the code no longer computes: the findings' intervals are t-intervals from a two-way standard error over
    seeds and image clusters, with a within-seed bootstrap over the clusters beside the differences."""
    said = "t-interval from a two-way standard error over the seeds and the image clusters"
    source = re.sub(r'"\s*f?"', "", Path(findings_report.__file__).read_text())  # adjacent literals joined
    assert said in " ".join(source.split())
    for name in ("findings.rst", "protocols.rst"):
        text = " ".join(rendered(name).split())
        assert "resampled together" not in text
        assert said in text, name


def test_the_captions_count_epochs_as_the_figure_and_the_table_do():
    """loss.png counted epochs from 1 while article_losses.csv and the captions counted from 0."""
    assert "counted from 0" in rendered("loss.rst")
    figures = (REPO / "src/mifeatures/stages/figures.py").read_text()
    assert "epoch e, counted from 0" in figures
