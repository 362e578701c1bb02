"""Findings stage: does the article's conclusion, that case c keeps the most MI, survive?

For each protocol and estimator, from the per-image MI of every (seed, case):
- each case's mean over seeds and images, with a bootstrap interval;
- the paired per-image difference of case c against each other case, with its interval;
- the share of (seed, image) pairs each case wins (highest MI; a tie goes to the case listed first).
Every interval comes from one bootstrap that resamples seeds and images together, with replacement,
and applies the same draw to every case: a difference keeps its pairing by seed and image. Then the
KSG cross-check: does the k-NN estimate rank the cases as the histogram does on the same pairs?

``results/findings.md`` states all of it; every sentence in it is generated from these numbers.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mifeatures import provenance
from mifeatures.io import atomic_write
from mifeatures.protocols import PROTOCOLS

CLAIM_CASE = "c"  # the article: the encoder whose maps keep the input's size keeps the most MI
# Estimator → column of the score stage's per-image summary, per protocol. The faithful protocol's
# summary is over the article's all-images loop, scored as the article scored.
ESTIMATORS = {
    "faithful": {"plug-in": "mean"},
    "corrected": {"plug-in": "mean_plugin", "Miller–Madow": "mean_miller_madow", "null-corrected": "mean"},
}
# The per-map column of the score stage's table the KSG estimate is ranked against.
HISTOGRAM = {"faithful": "mi_all_images", "corrected": "mi_corrected"}
OUTCOMES = {"holds": "holds", "fails": "fails", "undecided": "is undecided"}
MIN_SEEDS = 3  # fewer, and the interval says little about another training run


@dataclass(frozen=True)
class Run:
    """One trained (protocol, seed, case) and the tables the score and cross-check stages made of it."""

    protocol: str
    seed: int
    case: str
    summary: Path
    mi: Path
    crosscheck: Path


def per_image(runs: list[Run]) -> dict[tuple[str, str], dict[str, np.ndarray]]:
    """{(protocol, estimator): {case: (seeds, images) per-image MI}}, seeds in ascending order.

    Every protocol must have the same cases and seeds, and every run the same images.
    """
    layout = {(run.protocol, run.seed, run.case) for run in runs}
    protocols = [p for p in PROTOCOLS if any(run.protocol == p for run in runs)]
    seeds = sorted({run.seed for run in runs})
    cases = list(dict.fromkeys(run.case for run in runs))
    missing = [f"{p}/seed{s}/{c}" for p in protocols for s in seeds for c in cases if (p, s, c) not in layout]
    if missing or len(layout) != len(runs):
        raise ValueError(f"need exactly one run per (protocol, seed, case); missing: {', '.join(missing) or 'none'}"
                         f", given {len(runs)} runs for {len(layout)} combinations")
    frames = {(run.protocol, run.seed, run.case): pd.read_csv(run.summary) for run in runs}
    images = {tuple(frame["image"]) for frame in frames.values()}
    if len(images) != 1:
        raise ValueError(f"runs scored different images: {sorted(len(i) for i in images)} images")
    return {(protocol, estimator): {case: np.stack([frames[protocol, seed, case][column].to_numpy()
                                                    for seed in seeds]) for case in cases}
            for protocol in protocols for estimator, column in ESTIMATORS[protocol].items()}


def winners(values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per case, 1.0 where it has the highest value of all cases (first listed on a tie), else 0.0."""
    best = np.argmax(np.stack(list(values.values())), axis=0)
    return {case: (best == index).astype(float) for index, case in enumerate(values)}


def bootstrap_means(matrices: dict[str, np.ndarray], draws: int, seed: int) -> dict[str, np.ndarray]:
    """The bootstrap distribution, shape (draws,), of the mean of each (seeds, images) matrix.

    Each draw resamples the seeds and, independently, the images, both with replacement, and
    applies that one draw to every matrix. A draw is a pair of count vectors, so its mean is
    seed_counts · M · image_counts / (S·I): no resampled copy of M is built.
    """
    shapes = {matrix.shape for matrix in matrices.values()}
    if len(shapes) != 1:
        raise ValueError(f"matrices differ in shape: {sorted(shapes)}")
    (n_seeds, n_images), = shapes
    rng = np.random.default_rng(seed)
    seed_counts = rng.multinomial(n_seeds, np.full(n_seeds, 1 / n_seeds), size=draws).astype(float)
    image_counts = rng.multinomial(n_images, np.full(n_images, 1 / n_images), size=draws).astype(float)
    return {name: np.einsum("bs,si,bi->b", seed_counts, matrix, image_counts) / (n_seeds * n_images)
            for name, matrix in matrices.items()}


def interval(distribution: np.ndarray, confidence: float) -> tuple[float, float]:
    """The central ``confidence`` percentile interval of a bootstrap distribution."""
    tail = (1 - confidence) / 2
    low, high = np.quantile(distribution, [tail, 1 - tail])
    return float(low), float(high)


def statistics(values: dict[tuple[str, str], dict[str, np.ndarray]], draws: int, confidence: float, seed: int
               ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-case table, paired-difference table) for every (protocol, estimator).

    Per case: mean MI and win share, each with its interval. Differences: case c minus each other
    case, paired by seed and image. Every (protocol, estimator) uses the same resampling draws.
    """
    case_rows, difference_rows = [], []
    for (protocol, estimator), by_case in values.items():
        wins = winners(by_case)
        matrices = {f"mean {case}": m for case, m in by_case.items()} | {f"wins {c}": w for c, w in wins.items()}
        if CLAIM_CASE in by_case:
            matrices |= {f"diff {other}": by_case[CLAIM_CASE] - m for other, m in by_case.items() if other != CLAIM_CASE}
        distributions = bootstrap_means(matrices, draws, seed)
        for case, matrix in by_case.items():
            n_seeds, n_images = matrix.shape
            low, high = interval(distributions[f"mean {case}"], confidence)
            win_low, win_high = interval(distributions[f"wins {case}"], confidence)
            case_rows.append({"protocol": protocol, "estimator": estimator, "case": case, "seeds": n_seeds,
                              "images": n_images, "mean_mi": matrix.mean(), "low": low, "high": high,
                              "win_share": wins[case].mean(), "win_low": win_low, "win_high": win_high})
        for other in by_case:
            if CLAIM_CASE in by_case and other != CLAIM_CASE:
                low, high = interval(distributions[f"diff {other}"], confidence)
                difference_rows.append({"protocol": protocol, "estimator": estimator, "case": CLAIM_CASE,
                                        "other": other, "difference": matrices[f"diff {other}"].mean(),
                                        "low": low, "high": high})
    return pd.DataFrame(case_rows), pd.DataFrame(difference_rows,
                                                 columns=["protocol", "estimator", "case", "other", "difference",
                                                          "low", "high"])


def ksg_ranking(runs: list[Run]) -> pd.DataFrame:
    """Per protocol and case: mean KSG MI and mean histogram MI over the same (seed, image, map)
    pairs, each case's rank by both (1 = highest), and whether the two orders agree."""
    rows = []
    for run in runs:
        ksg = pd.read_csv(run.crosscheck)
        histogram = pd.read_csv(run.mi).set_index(["image", "map"])[HISTOGRAM[run.protocol]]
        pairs = pd.MultiIndex.from_frame(ksg[["image", "map"]])
        rows.append({"protocol": run.protocol, "case": run.case, "seed": run.seed, "pairs": len(ksg),
                     "ksg": ksg["ksg"].sum(), "histogram": histogram.loc[pairs].sum()})
    frame = pd.DataFrame(rows).groupby(["protocol", "case"], sort=False).sum(numeric_only=True)
    table = pd.DataFrame({"pairs": frame["pairs"], "ksg_mean": frame["ksg"] / frame["pairs"],
                          "histogram_mean": frame["histogram"] / frame["pairs"]}).reset_index()
    for estimate in ("ksg", "histogram"):
        table[f"{estimate}_rank"] = (table.groupby("protocol")[f"{estimate}_mean"]
                                     .rank(ascending=False, method="first").astype(int))
    same = table.groupby("protocol").apply(lambda p: bool((p["ksg_rank"] == p["histogram_rank"]).all()),
                                           include_groups=False)
    table["orders_agree"] = table["protocol"].map(same)
    return table


def verdict(differences: pd.DataFrame) -> str:
    """'holds' when c − x has its whole interval above 0 for every other case x, 'fails' when some
    case is above c with its whole interval, else 'undecided'."""
    if (differences["high"] < 0).any():
        return "fails"
    return "holds" if (differences["low"] > 0).all() else "undecided"


def _nats(value: float) -> str:
    return f"{value:.4f}"


def _ci(low: float, high: float) -> str:
    return f"[{low:.4f}, {high:.4f}]"


def report(cases: pd.DataFrame, differences: pd.DataFrame, ranking: pd.DataFrame, confidence: float,
           draws: int) -> str:
    """results/findings.md: every sentence generated from the three tables."""
    percent = f"{confidence:.0%}"
    first = cases.iloc[0]
    seeds, images = int(first["seeds"]), int(first["images"])
    lines = [
        f"# Findings: does case {CLAIM_CASE} keep the most mutual information?", "",
        f"Generated by `mifeatures findings` from {seeds} training seed{'s' * (seeds != 1)} × {images} images "
        f"per protocol and case. Intervals: {percent} bootstrap percentile intervals, {draws} resamples of "
        "seeds and images together; a difference is paired by seed and image. MI in nats.", "",
    ]
    if seeds < MIN_SEEDS:
        lines += [f"**Only {seeds} seed{'s' * (seeds != 1)}**: the intervals cannot cover another training run's "
                  f"variation; findings need at least {MIN_SEEDS} (`train.seeds`).", ""]
    verdicts = []
    for (protocol, estimator), table in cases.groupby(["protocol", "estimator"], sort=False):
        table = table.sort_values("mean_mi", ascending=False)
        best, runner = table.iloc[0], table.iloc[1]  # main refuses fewer than two cases
        lines += [f"## {protocol} protocol, {estimator} MI", "",
                  f"| case | mean MI | {percent} CI | share of images won | {percent} CI |", "|---|---|---|---|---|"]
        lines += [f"| {r.case} | {_nats(r.mean_mi)} | {_ci(r.low, r.high)} | {r.win_share:.1%} | "
                  f"[{r.win_low:.1%}, {r.win_high:.1%}] |" for r in table.itertuples()]
        lines.append("")
        lines.append(f"Highest mean MI: case {best.case}, {_nats(best.mean_mi)} {_ci(best.low, best.high)}, "
                     f"{_nats(best.mean_mi - runner.mean_mi)} above case {runner.case}.")
        paired = differences[(differences["protocol"] == protocol) & (differences["estimator"] == estimator)]
        if paired.empty:
            lines += [f"Case {CLAIM_CASE} was not run: the article's claim is not tested.", ""]
            continue
        for r in paired.itertuples():
            side = "above" if r.low > 0 else "below" if r.high < 0 else "not distinguishable from"
            lines.append(f"- {CLAIM_CASE} − {r.other}: {_nats(r.difference)} {_ci(r.low, r.high)}: "
                         f"case {CLAIM_CASE} is {side} case {r.other}.")
        outcome = verdict(paired)
        verdicts.append((protocol, estimator, outcome))
        lines += ["", f"**The article's claim {OUTCOMES[outcome]}** under the {protocol} protocol with the {estimator} "
                  f"estimate: " + {"holds": f"case {CLAIM_CASE} is above every other case, each interval above 0.",
                                   "fails": f"some case is above case {CLAIM_CASE}, its whole interval below 0.",
                                   "undecided": "some interval of a difference contains 0."}[outcome], ""]
    lines += ["## Cross-check: KSG k-nearest-neighbour MI", ""]
    for protocol, table in ranking.groupby("protocol", sort=False):
        by_ksg = " > ".join(table.sort_values("ksg_rank")["case"])
        by_histogram = " > ".join(table.sort_values("histogram_rank")["case"])
        agree = bool(table["orders_agree"].iloc[0])
        lines.append(f"- {protocol} protocol, {int(table['pairs'].iloc[0])} (seed, image, map) pairs per case: "
                     f"KSG ranks {by_ksg}, the histogram {by_histogram} on the same pairs: the orders "
                     + ("agree." if agree else "differ."))
    lines += ["", "## Summary", ""]
    lines += [f"- {protocol}, {estimator}: the claim {OUTCOMES[outcome]}." for protocol, estimator, outcome in verdicts]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """CLI: the findings over every trained (protocol, seed, case)."""
    parser = argparse.ArgumentParser(prog="mifeatures findings", description=__doc__.splitlines()[0])
    parser.add_argument("--run", nargs=6, action="append", required=True,
                        metavar=("PROTOCOL", "SEED", "CASE", "SUMMARY", "MI", "CROSSCHECK"),
                        help="one trained run and its score summary, per-map MI and cross-check tables; repeated")
    parser.add_argument("--bootstrap", type=int, default=2000, help="resamples; default: %(default)s")
    parser.add_argument("--confidence", type=float, default=0.95, help="default: %(default)s")
    parser.add_argument("--seed", type=int, default=0, help="seeds the resamples; default: %(default)s")
    parser.add_argument("--cases-out", required=True, help="per-case table to write (.csv)")
    parser.add_argument("--differences-out", required=True, help="paired-difference table to write (.csv)")
    parser.add_argument("--ksg-out", required=True, help="KSG ranking table to write (.csv)")
    parser.add_argument("--report-out", required=True, help="findings to write (.md)")
    args = parser.parse_args(argv)
    if args.bootstrap < 100 or not 0 < args.confidence < 1 or args.seed < 0:
        parser.error("need --bootstrap ≥ 100, 0 < --confidence < 1 and --seed ≥ 0")
    runs = []
    for protocol, seed, case, summary, mi, check in args.run:
        if protocol not in PROTOCOLS or not seed.isdigit():
            parser.error(f"--run {protocol} {seed} {case}: expected a protocol of {', '.join(PROTOCOLS)} and a seed ≥ 0")
        runs.append(Run(protocol, int(seed), case, Path(summary), Path(mi), Path(check)))
    if len({run.case for run in runs}) < 2:
        parser.error("findings compare cases: give runs of at least two")
    try:
        cases, differences = statistics(per_image(runs), args.bootstrap, args.confidence, args.seed)
    except ValueError as error:
        parser.error(str(error))
    ranking = ksg_ranking(runs)
    outputs = {args.cases_out: cases, args.differences_out: differences, args.ksg_out: ranking}
    for out, frame in outputs.items():
        with atomic_write(out, "w") as handle:
            frame.to_csv(handle, index=False)
    with atomic_write(args.report_out, "w") as handle:
        handle.write(report(cases, differences, ranking, args.confidence, args.bootstrap))
    inputs = {f"{kind}[{run.protocol}/seed{run.seed}/{run.case}]": path for run in runs
              for kind, path in (("summary", run.summary), ("mi", run.mi), ("crosscheck", run.crosscheck))}
    params = {"findings.bootstrap": args.bootstrap, "findings.confidence": args.confidence,
              "findings.seed": args.seed}
    provenance.write([*outputs, args.report_out], provenance.record("findings", inputs, params))
    print(Path(args.report_out).read_text())


if __name__ == "__main__":
    main()
