"""Tests of the aggregate stage: statistics per case and wins per image."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from helpers import html_rows
from mifeatures.stages.aggregate import main, metrics, per_case, per_image


def summary(means, maxima):
    """A per-image summary table as the score stage writes it (only the columns used here)."""
    return pd.DataFrame({"image": range(len(means)), "mean": means, "max": maxima})


SUMMARIES = {
    "a": summary([0.30, 0.10, 0.20], [0.9, 0.2, 0.5]),
    "b": summary([0.10, 0.40, 0.20], [0.3, 0.4, 0.6]),
    "c": summary([0.20, 0.30, 0.10], [0.5, 0.9, 0.1]),
}


def test_winner_is_the_case_with_the_highest_statistic_and_ties_go_first():
    """Image 0 → a, image 1 → b; image 2 ties a and b on mean and goes to a."""
    assert per_image(SUMMARIES, "mean")["winner"].tolist() == ["a", "b", "a"]
    assert per_image(SUMMARIES, "max")["winner"].tolist() == ["a", "c", "b"]


def test_per_case_statistics():
    """Mean, median and spread of per-image MI and wins per case."""
    cases = per_case(SUMMARIES, per_image(SUMMARIES, "mean")).set_index("case")
    assert cases.loc["a", "mean_mi"] == pytest.approx(0.2)
    assert cases.loc["b", "median_mean_mi"] == pytest.approx(0.2)
    assert cases.loc["c", "max_mi"] == pytest.approx(0.5)
    assert cases["wins"].to_dict() == {"a": 2, "b": 1, "c": 0}
    assert cases["win_share"].sum() == pytest.approx(1.0)


def test_cases_must_score_the_same_images():
    """Summaries over different image sets cannot be compared."""
    with pytest.raises(ValueError, match="cases scored different images"):
        per_image({"a": summary([0.1], [0.1]), "b": summary([0.1, 0.2], [0.1, 0.2])}, "mean")


def test_unknown_statistic_is_refused():
    """win_by must be mean or max."""
    with pytest.raises(ValueError, match="expected one of mean, max"):
        per_image(SUMMARIES, "median")


def test_cli_writes_tables_and_dvc_metrics(tmp_path):
    """The CLI writes the per-case and per-image tables and a metrics JSON keyed by case."""
    args = []
    for case, frame in SUMMARIES.items():
        frame.to_csv(tmp_path / f"{case}.csv", index=False)
        args.append(f"{case}={tmp_path / f'{case}.csv'}")
    main(args + ["--cases-out", str(tmp_path / "cases.csv"), "--images-out", str(tmp_path / "images.csv"),
                 "--metrics-out", str(tmp_path / "metrics.json")])
    written = json.loads((tmp_path / "metrics.json").read_text())
    cases = pd.read_csv(tmp_path / "cases.csv")
    assert written == metrics(cases, "mean")
    assert written["wins"] == {"a": 2, "b": 1, "c": 0}
    assert pd.read_csv(tmp_path / "images.csv")["winner"].tolist() == ["a", "b", "a"]


def test_the_report_showed_cases_csv_as_a_download_of_17_digit_floats(tmp_path):
    """The per-case table is also written as an HTML table, which the report shows in place: every column and
    row of the CSV, its numbers to 4 significant digits."""
    args = []
    for case, frame in SUMMARIES.items():
        frame.to_csv(tmp_path / f"{case}.csv", index=False)
        args.append(f"{case}={tmp_path / f'{case}.csv'}")
    main(args + ["--cases-out", str(tmp_path / "cases.csv"), "--cases-table-out", str(tmp_path / "cases.html"),
                 "--images-out", str(tmp_path / "images.csv"), "--metrics-out", str(tmp_path / "metrics.json")])
    cases = pd.read_csv(tmp_path / "cases.csv")
    header, *rows = html_rows((tmp_path / "cases.html").read_text())
    assert header == list(cases.columns) and len(rows) == len(cases)
    for row, (_, expected) in zip(rows, cases.iterrows()):
        for cell, value in zip(row, expected):
            assert cell == (f"{value:.4g}" if isinstance(value, float) else str(value))
    assert "0.2" in rows[0] and not any(len(cell) > 8 for row in rows for cell in row)
