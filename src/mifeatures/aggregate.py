"""Aggregate stage: per-case statistics of per-image MI, and which case wins each image."""

from __future__ import annotations

import argparse
import json

import pandas as pd

from mifeatures import provenance
from mifeatures.io import atomic_write, parse_case_paths

WIN_STATISTICS = ("mean", "max")


def per_image(summaries: dict[str, pd.DataFrame], statistic: str) -> pd.DataFrame:
    """One row per image: ``statistic`` (mean or max MI over the 32 maps) per case, and the winner.

    The winner is the case with the highest value; a tie goes to the case listed first.
    """
    if statistic not in WIN_STATISTICS:
        raise ValueError(f"unknown aggregate.win_by {statistic!r}; expected one of {', '.join(WIN_STATISTICS)}")
    indices = {case: tuple(frame["image"]) for case, frame in summaries.items()}
    if len(set(indices.values())) != 1:
        raise ValueError(f"cases scored different images: {', '.join(f'{c}: {len(i)}' for c, i in indices.items())}")
    first = next(iter(summaries.values()))
    table = pd.DataFrame({"image": first["image"].to_numpy()})
    for case, frame in summaries.items():
        table[case] = frame[statistic].to_numpy()
    table["winner"] = table[list(summaries)].idxmax(axis=1)
    return table


def per_case(summaries: dict[str, pd.DataFrame], images: pd.DataFrame) -> pd.DataFrame:
    """One row per case: centre and spread of per-image mean and max MI, and wins."""
    wins = images["winner"].value_counts()
    rows = []
    for case, frame in summaries.items():
        rows.append({
            "case": case,
            "images": len(frame),
            "mean_mi": frame["mean"].mean(),
            "median_mean_mi": frame["mean"].median(),
            "std_mean_mi": frame["mean"].std(ddof=0),
            "max_mi": frame["max"].mean(),
            "median_max_mi": frame["max"].median(),
            "std_max_mi": frame["max"].std(ddof=0),
            "wins": int(wins.get(case, 0)),
            "win_share": float(wins.get(case, 0)) / len(images),
        })
    return pd.DataFrame(rows)


def metrics(cases: pd.DataFrame, statistic: str) -> dict:
    """The numbers ``dvc metrics show`` reports: mean/max MI and wins per case."""
    by_case = cases.set_index("case")
    return {
        "win_by": statistic,
        "mean_mi": {case: round(float(v), 6) for case, v in by_case["mean_mi"].items()},
        "max_mi": {case: round(float(v), 6) for case, v in by_case["max_mi"].items()},
        "wins": {case: int(v) for case, v in by_case["wins"].items()},
    }


def main(argv: list[str] | None = None) -> None:
    """CLI: aggregate the per-image summaries of every case."""
    parser = argparse.ArgumentParser(prog="mifeatures aggregate", description=__doc__.splitlines()[0])
    parser.add_argument("summaries", nargs="+", metavar="CASE=PATH", help="per-image summary of each case")
    parser.add_argument("--win-by", default="mean", choices=WIN_STATISTICS, help="default: %(default)s")
    parser.add_argument("--cases-out", required=True, help="per-case table to write (.csv)")
    parser.add_argument("--images-out", required=True, help="per-image table with winners (.csv)")
    parser.add_argument("--metrics-out", required=True, help="metrics for DVC (.json)")
    args = parser.parse_args(argv)
    summary_paths = parse_case_paths(args.summaries)
    summaries = {case: pd.read_csv(path) for case, path in summary_paths.items()}
    images = per_image(summaries, args.win_by)
    cases = per_case(summaries, images)
    with atomic_write(args.images_out, "w") as handle:
        images.to_csv(handle, index=False)
    with atomic_write(args.cases_out, "w") as handle:
        cases.to_csv(handle, index=False)
    with atomic_write(args.metrics_out, "w") as handle:
        json.dump(metrics(cases, args.win_by), handle, indent=2, sort_keys=True)
        handle.write("\n")
    job = provenance.record("aggregate", {f"summary[{case}]": path for case, path in summary_paths.items()},
                            {"aggregate.win_by": args.win_by})
    provenance.write([args.images_out, args.cases_out, args.metrics_out], job)
    print(cases.to_string(index=False))


if __name__ == "__main__":
    main()
