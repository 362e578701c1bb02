"""The article's printed losses beside a real run's: the check table every build makes."""

from __future__ import annotations

import pandas as pd

from helpers import html_rows
from mifeatures.stages.article import ARTICLE_LOSSES, loss_check, main


def test_each_printed_epoch_is_compared_or_said_to_be_unreached(trained_case, tmp_path):
    """Case a trained for one epoch: its epoch-0 mean loss stands beside the article's 0.747, and epoch 49
    says this run stopped earlier; cases not run get no rows."""
    losses = pd.read_csv(trained_case["loss"])
    out = tmp_path / "article_losses.csv"
    main([f"a={trained_case['loss']}", "--out", str(out)])
    table = pd.read_csv(out)
    assert table[["case", "epoch"]].values.tolist() == [["a", 0], ["a", 49]]
    first, last = table.to_dict("records")
    assert first["article_loss"] == ARTICLE_LOSSES[("a", 0)]
    assert first["this_run_loss"] == round(losses.loc[losses.epoch == 0, "loss"].mean(), 6)
    assert abs(first["difference"] - (first["this_run_loss"] - 0.747)) < 1e-9
    assert pd.isna(last["this_run_loss"]) and last["note"] == "this run has 1 epoch (0 to 0)"


def test_cases_are_matched_by_name():
    """Case d's printed numbers go with case d's log, whatever order the logs come in."""
    run = pd.DataFrame({"epoch": [0, 49], "loss": [0.7, 0.02]})
    other = pd.DataFrame({"epoch": [0], "loss": [9.0]})
    table = loss_check({"c": other, "d": run}).set_index(["case", "epoch"])
    assert table.loc[("d", 49), "this_run_loss"] == 0.02 and table.loc[("c", 0), "this_run_loss"] == 9.0
    assert table.loc[("c", 32), "note"] == "this run has 1 epoch (0 to 0)"


def test_the_report_showed_article_losses_csv_as_a_download(trained_case, tmp_path):
    """The table is also an HTML page the report shows in place: the CSV's rows, numbers to 4 significant digits,
    an empty cell for an epoch this run did not reach, and the notes whole."""
    out, page = tmp_path / "article_losses.csv", tmp_path / "article_losses.html"
    main([f"a={trained_case['loss']}", "--out", str(out), "--table-out", str(page)])
    table = pd.read_csv(out)
    header, *rows = html_rows(page.read_text())
    assert header == list(table.columns)
    first, last = rows
    assert first[:4] == ["a", "0", "0.747", f"{table['this_run_loss'][0]:.4g}"] and first[5] == table["note"][0]
    assert last[3:] == ["", "", "this run has 1 epoch (0 to 0)"]
