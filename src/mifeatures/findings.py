"""Findings stage: does the article's conclusion, that case c keeps the most MI, survive?

The training run is the unit of inference: the question is about what training does, and images are
the same for every run. For each protocol and estimator, from the per-image MI of every (seed, case):
- each case's mean, and its share of images won (highest MI; a tie goes to the case listed first);
- the paired difference of case c against each other case: per seed, the mean over images of the
  per-image difference; then a t-interval over the seeds (S − 1 degrees of freedom) and one-sided
  t-tests, which are exact for normal seed means whatever the spread of images or seeds;
- beside it, the within-seed uncertainty: a bootstrap that resamples the images, seeds kept.
The estimand is the expected value over training runs on these images.

The verdict of each (protocol, estimator), at level α = 1 − confidence, one-sided tests at α/2 so that
it reads off the printed two-sided intervals: the claim *holds* when every interval of c − x lies above 0
(an intersection-union test, no correction needed); it *fails* when, after Holm's correction across the
comparisons, some case is above c; it finds *no difference that matters* when every interval lies
within ± the margin (two one-sided tests, TOST); otherwise it is *undecided*. One (protocol,
estimator) is primary, declared in params before any number is seen; the rest are secondary. A power
analysis says how many seeds the primary rule would need.

``results/findings.md`` states all of it; every sentence in it is generated from these numbers.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower
from statsmodels.stats.weightstats import DescrStatsW

from mifeatures import provenance
from mifeatures.io import atomic_write
from mifeatures.protocols import PROTOCOLS

CLAIM_CASE = "c"  # the article: the encoder whose maps keep the input's size keeps the most MI
# Estimator → column of the score stage's per-image summary, per protocol. The faithful protocol's
# summary is over the article's all-images loop, scored as the article scored.
# The corrected protocol scores the valid region (every case's map over image pixels, computed from image
# pixels only) beside the whole 96×96 grid, which stays as a sensitivity variant.
VALID = "valid 88×88"
ESTIMATORS = {
    "faithful": {"plug-in": "mean"},
    "corrected": {f"null-corrected, {VALID}": "mean_valid_corrected", f"plug-in, {VALID}": "mean_valid_plugin",
                  f"Miller–Madow, {VALID}": "mean_valid_miller_madow", "null-corrected": "mean",
                  "plug-in": "mean_plugin", "Miller–Madow": "mean_miller_madow"},
}
# Calibration controls: the score stage's per-image column of an estimate whose true value is ≈ 0.
CONTROLS = {"corrected": {f"mismatched image, null-corrected, {VALID}": "mean_valid_corrected_mismatched"}}
# The per-map column of the score stage's table the KSG estimate is ranked against.
HISTOGRAM = {"faithful": "mi_all_images", "corrected": "mi_corrected"}
OUTCOMES = {"holds": "holds", "fails": "fails", "equivalent": "finds no difference that matters",
            "undecided": "is undecided"}
MIN_SEEDS = 3  # fewer, and the interval says little about another training run
FEW_SEEDS = 5  # below, an interval over seeds rests on few degrees of freedom and on normal seed means
POWER = 0.8
ADVANTAGES = (0.01, 0.02)  # nats: true advantages of c the power analysis sizes the seeds for
MAX_SEEDS = 100_000  # the power analysis's search ends here: beyond, the SD makes any study hopeless


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


def controls(runs: list[Run], confidence: float) -> pd.DataFrame:
    """Per protocol, control and case: the control's mean over seeds and images, with its t-interval over
    the seeds' means (cf. ``statistics``)."""
    rows = []
    for (protocol, control, case), group in _control_values(runs).items():
        test = seed_test(group, confidence, margin=1.0)
        rows.append({"protocol": protocol, "control": control, "case": case, "seeds": len(group),
                     "mean_mi": group.mean(), "low": test.low, "high": test.high})
    return pd.DataFrame(rows, columns=["protocol", "control", "case", "seeds", "mean_mi", "low", "high"])


def _control_values(runs: list[Run]) -> dict[tuple[str, str, str], np.ndarray]:
    """{(protocol, control, case): (seeds, images)} of every control the runs' summaries hold."""
    values: dict[tuple[str, str, str], list[np.ndarray]] = {}
    for run in sorted(runs, key=lambda run: run.seed):
        for control, column in CONTROLS.get(run.protocol, {}).items():
            values.setdefault((run.protocol, control, run.case), []).append(
                pd.read_csv(run.summary)[column].to_numpy())
    return {key: np.stack(rows) for key, rows in values.items()}


def winners(values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per case, 1.0 where it has the highest value of all cases (first listed on a tie), else 0.0."""
    best = np.argmax(np.stack(list(values.values())), axis=0)
    return {case: (best == index).astype(float) for index, case in enumerate(values)}


def bootstrap_means(matrices: dict[str, np.ndarray], draws: int, seed: int) -> dict[str, np.ndarray]:
    """The within-seed bootstrap distribution, shape (draws,), of the mean of each (seeds, images) matrix.

    Each draw resamples the images with replacement, the seeds kept (they are the unit of inference,
    whose uncertainty the t-interval gives), and applies that one draw to every matrix. A draw is a
    count vector, so its mean is mean_s(M · image_counts) / I: no resampled copy of M is built.
    """
    shapes = {matrix.shape for matrix in matrices.values()}
    if len(shapes) != 1:
        raise ValueError(f"matrices differ in shape: {sorted(shapes)}")
    (n_seeds, n_images), = shapes
    rng = np.random.default_rng(seed)
    image_counts = rng.multinomial(n_images, np.full(n_images, 1 / n_images), size=draws).astype(float)
    return {name: np.einsum("si,bi->b", matrix, image_counts) / (n_seeds * n_images)
            for name, matrix in matrices.items()}


def interval(distribution: np.ndarray, confidence: float) -> tuple[float, float]:
    """The central ``confidence`` percentile interval of a bootstrap distribution."""
    tail = (1 - confidence) / 2
    low, high = np.quantile(distribution, [tail, 1 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class SeedTest:
    """A t-interval and one-sided t-tests over the per-seed means of a (seeds, images) matrix."""

    mean: float
    sd: float  # of the seed means
    low: float
    high: float
    p_above: float  # H1: the mean is above 0
    p_below: float  # H1: the mean is below 0
    p_within: float  # TOST, H1: the mean lies within ± the margin


def seed_test(matrix: np.ndarray, confidence: float, margin: float) -> SeedTest:
    """The seed-level inference on ``matrix``: NaN where one seed leaves no degree of freedom."""
    means = matrix.mean(axis=1)
    mean = float(means.mean())
    if len(means) < 2:
        return SeedTest(mean, *[float("nan")] * 6)
    if np.ptp(means) == 0:  # every run alike (a win share of 0 or 1): the mean is known exactly
        return SeedTest(mean, 0.0, mean, mean, float(mean <= 0), float(mean >= 0), float(abs(mean) >= margin))
    stats = DescrStatsW(means)
    low, high = stats.tconfint_mean(alpha=1 - confidence)
    p_within = stats.ttost_mean(-margin, margin)[0]
    return SeedTest(float(stats.mean), float(stats.std_mean * np.sqrt(len(means))), float(low), float(high),
                    float(stats.ttest_mean(0, alternative="larger")[1]),
                    float(stats.ttest_mean(0, alternative="smaller")[1]), float(p_within))


def statistics(values: dict[tuple[str, str], dict[str, np.ndarray]], draws: int, confidence: float, seed: int,
               margin: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-case table, paired-difference table) for every (protocol, estimator).

    Per case: mean MI and win share, each with its t-interval over seeds (a share's clipped to [0, 1]).
    Differences: case c minus each
    other case, paired by seed and image, with the seed-level tests (Holm-adjusted p for "below") and the
    within-seed bootstrap interval. Every (protocol, estimator) uses the same resampling draws.
    """
    case_rows, difference_rows = [], []
    for (protocol, estimator), by_case in values.items():
        wins = winners(by_case)
        for case, matrix in by_case.items():
            n_seeds, n_images = matrix.shape
            mean, share = seed_test(matrix, confidence, margin), seed_test(wins[case], confidence, margin)
            case_rows.append({"protocol": protocol, "estimator": estimator, "case": case, "seeds": n_seeds,
                              "images": n_images, "mean_mi": matrix.mean(), "low": mean.low, "high": mean.high,
                              "win_share": wins[case].mean(),  # a share's t-interval, clipped to [0, 1]
                              "win_low": max(share.low, 0.0), "win_high": min(share.high, 1.0)})
        if CLAIM_CASE not in by_case:
            continue
        paired = {other: by_case[CLAIM_CASE] - m for other, m in by_case.items() if other != CLAIM_CASE}
        within = bootstrap_means(paired, draws, seed)
        tests = {other: seed_test(matrix, confidence, margin) for other, matrix in paired.items()}
        below = [test.p_below for test in tests.values()]
        holm = (multipletests(below, method="holm")[1] if not np.isnan(below).any()
                else np.full(len(below), np.nan))
        for (other, test), adjusted in zip(tests.items(), holm):
            within_low, within_high = interval(within[other], confidence)
            difference_rows.append({"protocol": protocol, "estimator": estimator, "case": CLAIM_CASE,
                                    "other": other, "difference": paired[other].mean(), "seed_sd": test.sd,
                                    "low": test.low, "high": test.high, "p_above": test.p_above,
                                    "p_below_holm": adjusted, "p_within_margin": test.p_within,
                                    "within_low": within_low, "within_high": within_high})
    columns = ["protocol", "estimator", "case", "other", "difference", "seed_sd", "low", "high", "p_above",
               "p_below_holm", "p_within_margin", "within_low", "within_high"]
    return pd.DataFrame(case_rows), pd.DataFrame(difference_rows, columns=columns)


def seeds_needed(seed_sd: float, advantage: float, comparisons: int, confidence: float,
                 power: float = POWER) -> int | None:
    """Seeds per case for the "holds" rule to succeed with probability ``power`` when c is truly ahead of
    each of ``comparisons`` cases by ``advantage``, each seed mean of c − x having SD ``seed_sd``.

    Each comparison is a one-sided t-test at (1 − confidence)/2; all must reject. Taking them as
    independent, each needs power ``power ** (1 / comparisons)``; they share case c's runs and so are
    positively correlated, which only raises the joint power: the count errs on the safe side.
    None when the SD is unknown (one seed) or zero, or more than MAX_SEEDS would be needed.
    """
    if not seed_sd > 0:
        return None
    analysis, each = TTestPower(), power ** (1 / comparisons)

    def enough(n: int) -> bool:
        return analysis.power(effect_size=advantage / seed_sd, nobs=n, alpha=(1 - confidence) / 2,
                              alternative="larger") >= each

    low, high = 1, 2  # power grows with n: double until enough, then bisect
    while not enough(high):
        low, high = high, 2 * high
        if high > MAX_SEEDS:
            return None
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if enough(middle) else (middle, high)
    return high


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


def verdict(differences: pd.DataFrame, confidence: float) -> str:
    """The rule of the module docstring, on one (protocol, estimator)'s rows of the difference table."""
    alpha = (1 - confidence) / 2
    if (differences["low"] > 0).all():
        return "holds"
    if (differences["p_below_holm"] < alpha).any():
        return "fails"
    if (differences["p_within_margin"] < alpha).all():
        return "equivalent"
    return "undecided"


def _nats(value: float) -> str:
    return f"{value:.4f}"


def _ci(low: float, high: float) -> str:
    return f"[{low:.4f}, {high:.4f}]"


EXPLANATIONS = {
    "holds": f"case {CLAIM_CASE} is above every other case, each interval of the difference above 0.",
    "fails": f"some case is above case {CLAIM_CASE}: its one-sided test rejects after Holm's correction.",
    "equivalent": "every difference lies within ± the margin, each interval inside it.",
    "undecided": "some interval of a difference contains 0 and reaches beyond the margin.",
}


def _differences(paired: pd.DataFrame) -> list[str]:
    lines = []
    for r in paired.itertuples():
        side = "above" if r.low > 0 else "below" if r.high < 0 else "not distinguishable from"
        lines.append(f"- {CLAIM_CASE} − {r.other}: {_nats(r.difference)} {_ci(r.low, r.high)}: "
                     f"case {CLAIM_CASE} is {side} case {r.other} (seed SD {_nats(r.seed_sd)}; within seeds, "
                     f"images resampled: {_ci(r.within_low, r.within_high)}).")
    return lines


def _power(paired: pd.DataFrame, seeds: int, n_cases: int, confidence: float) -> str:
    sd = paired["seed_sd"].max()
    needed = [seeds_needed(sd, advantage, len(paired), confidence) for advantage in ADVANTAGES]
    if any(n is None for n in needed):
        return (f"Power: the seeds needed cannot be given: the seed-level SD ({_nats(sd)} nats) is unknown or "
                f"zero, or more than {MAX_SEEDS} seeds would be needed.")
    sizes = "; ".join(f"of {advantage} nats: {n} seeds per case ({n * n_cases} trainings)"
                      for advantage, n in zip(ADVANTAGES, needed))
    return (f"Power: at the largest seed-level SD of a difference this run measured, {_nats(sd)} nats (from "
            f"{seeds} seeds, itself uncertain), the rule above detects a true advantage of case {CLAIM_CASE} "
            f"over every other case with {POWER:.0%} power with, for an advantage {sizes}.")


def report(cases: pd.DataFrame, differences: pd.DataFrame, calibration: pd.DataFrame, ranking: pd.DataFrame,
           confidence: float, draws: int, primary: tuple[str, str], margin: float) -> str:
    """results/findings.md: every sentence generated from the three tables; the primary verdict first."""
    percent = f"{confidence:.0%}"
    first = cases.iloc[0]
    seeds, images = int(first["seeds"]), int(first["images"])
    lines = [
        f"# Findings: does case {CLAIM_CASE} keep the most mutual information?", "",
        f"Generated by `mifeatures findings` from {seeds} training seed{'s' * (seeds != 1)} × {images} images "
        f"per protocol and case. The training run is the unit of inference: each interval is a {percent} "
        f"t-interval over the seeds' means ({seeds - 1} degrees of freedom), the estimand the expected value over "
        "training runs on these images; a difference is paired by seed and image. Beside each difference, the "
        f"within-seed uncertainty: a {percent} bootstrap interval, {draws} resamples of the images. A difference "
        f"that matters is one of at least {margin} nats (`findings.margin`). MI in nats.", "",
    ]
    if seeds < MIN_SEEDS:
        lines += [f"**Only {seeds} seed{'s' * (seeds != 1)}**: the intervals cannot cover another training run's "
                  f"variation; findings need at least {MIN_SEEDS} (`train.seeds`).", ""]
    elif seeds < FEW_SEEDS:
        lines += [f"**Fewer than {FEW_SEEDS} seeds** ({seeds}): each interval rests on {seeds - 1} degrees of "
                  "freedom and holds its coverage only if the seeds' means are normal; it is wide, and a verdict "
                  "from it is fragile.", ""]
    protocol, estimator = primary
    paired = differences[(differences["protocol"] == protocol) & (differences["estimator"] == estimator)]
    n_cases = int(((cases["protocol"] == protocol) & (cases["estimator"] == estimator)).sum())
    lines += [f"## Primary verdict: {protocol} protocol, {estimator} MI", "",
              "Declared in params.yaml (`findings.primary`) before any number was seen; every other (protocol, "
              "estimator) below is secondary.", ""]
    if paired.empty:
        lines += [f"Case {CLAIM_CASE} or the {protocol} protocol was not run: the primary verdict is not tested.", ""]
    else:
        outcome = verdict(paired, confidence)
        lines += [f"**The article's claim {OUTCOMES[outcome]}**: {EXPLANATIONS[outcome]}", "", *_differences(paired),
                  "", _power(paired, seeds, n_cases, confidence), ""]
    verdicts = []
    for (protocol, estimator), table in cases.groupby(["protocol", "estimator"], sort=False):
        table = table.sort_values("mean_mi", ascending=False)
        lines += [f"## {protocol} protocol, {estimator} MI", "",
                  f"| case | mean MI | {percent} CI | share of images won | {percent} CI |", "|---|---|---|---|---|"]
        lines += [f"| {r.case} | {_nats(r.mean_mi)} | {_ci(r.low, r.high)} | {r.win_share:.1%} | "
                  f"[{r.win_low:.1%}, {r.win_high:.1%}] |" for r in table.itertuples()]
        lines.append("")
        paired = differences[(differences["protocol"] == protocol) & (differences["estimator"] == estimator)]
        outcome = verdict(paired, confidence) if not paired.empty else None
        if outcome == "holds":
            best = table.iloc[0]
            lines.append(f"Highest mean MI: case {best.case}, {_nats(best.mean_mi)} {_ci(best.low, best.high)}.")
        else:
            order = ", ".join(f"{r.case} {_nats(r.mean_mi)}" for r in table.itertuples())
            lines.append(f"Means in order: {order}; an order, not a ranking: no case is shown to be highest.")
        if outcome is None:
            lines += [f"Case {CLAIM_CASE} was not run: the article's claim is not tested.", ""]
            continue
        verdicts.append((protocol, estimator, outcome))
        lines += [*_differences(paired), "", f"**The article's claim {OUTCOMES[outcome]}** under the {protocol} "
                  f"protocol with the {estimator} estimate: {EXPLANATIONS[outcome]}", ""]
    for control, table in calibration.groupby("control", sort=False):
        lines += [f"## Calibration: {control}", "",
                  "Each image's maps scored, as the primary score does, against the next image, whose true MI "
                  "with them is ≈ 0: what is left is the bias the estimate keeps for that case.", "",
                  f"| protocol | case | mean MI | {percent} CI |", "|---|---|---|---|"]
        lines += [f"| {r.protocol} | {r.case} | {_nats(r.mean_mi)} | {_ci(r.low, r.high)} |"
                  for r in table.itertuples()]
        lines.append("")
    if "b" in set(cases.loc[cases["protocol"] == "faithful", "case"]):
        lines += ["Case b was never scored in the article's notebooks: its faithful scores here (the image "
                  "resized to b's 104×104) extend the article's method to it, an extrapolation.", ""]
    lines += ["## Cross-check: KSG k-nearest-neighbour MI", "",
              "KSG has no spatial correction, so on smooth maps it is biased as the plug-in histogram is: the "
              "same order from both describes the data, it does not corroborate the histogram.", ""]
    for protocol, table in ranking.groupby("protocol", sort=False):
        by_ksg = " > ".join(table.sort_values("ksg_rank")["case"])
        by_histogram = " > ".join(table.sort_values("histogram_rank")["case"])
        agree = bool(table["orders_agree"].iloc[0])
        lines.append(f"- {protocol} protocol, {int(table['pairs'].iloc[0])} (seed, image, map) pairs per case: "
                     f"KSG orders {by_ksg}, the histogram {by_histogram} on the same pairs: the orders "
                     + ("are the same." if agree else "differ."))
    lines += ["", "## Summary", ""]
    lines += [f"- {protocol}, {estimator}{' (primary)' * ((protocol, estimator) == primary)}: the claim "
              f"{OUTCOMES[outcome]}." for protocol, estimator, outcome in verdicts]
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
    parser.add_argument("--margin", type=float, required=True,
                        help="nats: differences within ± it do not matter (the equivalence test)")
    parser.add_argument("--primary", nargs=2, required=True, metavar=("PROTOCOL", "ESTIMATOR"),
                        help="the (protocol, estimator) whose verdict answers the question, declared beforehand")
    parser.add_argument("--cases-out", required=True, help="per-case table to write (.csv)")
    parser.add_argument("--differences-out", required=True, help="paired-difference table to write (.csv)")
    parser.add_argument("--controls-out", required=True, help="calibration-control table to write (.csv)")
    parser.add_argument("--ksg-out", required=True, help="KSG ranking table to write (.csv)")
    parser.add_argument("--report-out", required=True, help="findings to write (.md)")
    args = parser.parse_args(argv)
    if args.bootstrap < 100 or not 0 < args.confidence < 1 or args.seed < 0 or not args.margin > 0:
        parser.error("need --bootstrap ≥ 100, 0 < --confidence < 1, --seed ≥ 0 and --margin > 0")
    primary = tuple(args.primary)
    if primary[0] not in ESTIMATORS or primary[1] not in ESTIMATORS[primary[0]]:
        parser.error(f"--primary {' '.join(primary)}: expected a protocol and one of its estimators, {ESTIMATORS}")
    runs = []
    for protocol, seed, case, summary, mi, check in args.run:
        if protocol not in PROTOCOLS or not seed.isdigit():
            parser.error(f"--run {protocol} {seed} {case}: expected a protocol of {', '.join(PROTOCOLS)} and a seed ≥ 0")
        runs.append(Run(protocol, int(seed), case, Path(summary), Path(mi), Path(check)))
    if len({run.case for run in runs}) < 2:
        parser.error("findings compare cases: give runs of at least two")
    try:
        cases, differences = statistics(per_image(runs), args.bootstrap, args.confidence, args.seed, args.margin)
    except ValueError as error:
        parser.error(str(error))
    ranking, calibration = ksg_ranking(runs), controls(runs, args.confidence)
    outputs = {args.cases_out: cases, args.differences_out: differences, args.controls_out: calibration,
               args.ksg_out: ranking}
    for out, frame in outputs.items():
        with atomic_write(out, "w") as handle:
            frame.to_csv(handle, index=False)
    with atomic_write(args.report_out, "w") as handle:
        handle.write(report(cases, differences, calibration, ranking, args.confidence, args.bootstrap, primary,
                            args.margin))
    inputs = {f"{kind}[{run.protocol}/seed{run.seed}/{run.case}]": path for run in runs
              for kind, path in (("summary", run.summary), ("mi", run.mi), ("crosscheck", run.crosscheck))}
    params = {"findings.bootstrap": args.bootstrap, "findings.confidence": args.confidence,
              "findings.seed": args.seed, "findings.margin": args.margin,
              "findings.primary": {"estimator": primary[1], "protocol": primary[0]}}
    provenance.write([*outputs, args.report_out], provenance.record("findings", inputs, params))
    print(Path(args.report_out).read_text())


if __name__ == "__main__":
    main()
