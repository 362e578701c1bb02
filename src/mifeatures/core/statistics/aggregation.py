"""Per-case statistics of per-image MI, and which case wins each image."""

from __future__ import annotations

import pandas as pd

WIN_STATISTICS = ("mean", "max")  # what a case may win an image by: its maps' mean or max MI


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
