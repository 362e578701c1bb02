"""The article's own printed numbers beside this run's: a check made by every build.

The article's notebooks printed the mean batch loss of some epochs (read from their outputs; case
b's notebook was never run to the end, and case c stopped after epoch 32). Each is set beside this
run's mean loss at the same epoch; an epoch this run did not reach says so.
"""

from __future__ import annotations

import argparse

import pandas as pd

from mifeatures.workflow import provenance, usage
from mifeatures.core.io import atomic_write, parse_case_paths
from mifeatures.core.statistics.tables import html_table

# (case, epoch) → mean batch loss printed by the article's notebooks.
ARTICLE_LOSSES = {("a", 0): 0.747, ("a", 49): 0.0786, ("c", 0): 0.739, ("c", 32): 0.0274,
                  ("d", 0): 0.749, ("d", 49): 0.0216}
ARTICLE_STEPS_PER_EPOCH = 500  # 5 000 images in batches of 10
COLUMNS = ["case", "epoch", "article_loss", "this_run_loss", "difference", "note"]


def loss_check(losses: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per printed (case, epoch) of the cases given: the article's loss, this run's mean loss at
    that epoch and their difference, or a note that this run stopped earlier.

    >>> run = pd.DataFrame({"epoch": [0, 0, 1, 1], "loss": [0.8, 0.7, 0.5, 0.3]})
    >>> loss_check({"a": run}).to_dict("records")[0]["note"]
    "epoch 0 is the mean over its first 2 steps, from untrained weights (...); the article's over 500"
    """
    rows = []
    for (case, epoch), printed in ARTICLE_LOSSES.items():
        if case not in losses:
            continue
        per_epoch = losses[case].groupby("epoch")["loss"].mean()
        if epoch in per_epoch.index:
            ours = round(float(per_epoch[epoch]), 6)
            # An untrained network's loss is 2·ln 2·(α + β + γ), ≈ 1.39 at the article's weights; the mean over
            # an epoch falls below it by as much as the epoch trains, so short epochs sit higher.
            note = (f"epoch 0 is the mean over its first {int((losses[case]['epoch'] == 0).sum())} steps, from "
                    "untrained weights (2·ln 2·(α + β + γ) ≈ 1.39 at the first step); the article's over "
                    f"{ARTICLE_STEPS_PER_EPOCH}") if epoch == 0 else ""
            rows.append([case, epoch, printed, ours, round(ours - printed, 6), note])
        else:
            epochs = len(per_epoch)
            rows.append([case, epoch, printed, None, None,
                         f"this run has {epochs} epoch{'s' * (epochs != 1)} (0 to {per_epoch.index.max()})"])
    return pd.DataFrame(rows, columns=COLUMNS)


def main(argv: list[str] | None = None) -> None:
    """CLI: write the table of the article's printed losses beside this run's."""
    parser = argparse.ArgumentParser(prog="mifeatures article", description=usage.summary(__doc__))
    parser.add_argument("losses", nargs="+", metavar="CASE=PATH", help="loss log of each case")
    parser.add_argument("--out", required=True, help="table to write (.csv)")
    parser.add_argument("--table-out", help="the table for a reader (.html), rounded")
    args = parser.parse_args(argv)
    paths = parse_case_paths(args.losses)
    table = loss_check({case: pd.read_csv(path) for case, path in paths.items()})
    with atomic_write(args.out, "w") as handle:
        table.to_csv(handle, index=False)
    if args.table_out:
        with atomic_write(args.table_out, "w") as handle:
            handle.write(html_table(table, "The article's printed mean losses beside this run's, by epoch from 0"))
    job = provenance.record("article", {f"loss[{case}]": path for case, path in paths.items()}, {})
    provenance.write([args.out, *filter(None, [args.table_out])], job)
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
