"""Findings stage: does the article's conclusion, that case c keeps the most MI, survive? (The case is
``findings.reference``: c, the article's, by default.)

The question is about what training does, on images like these (``mifeatures.core.statistics.inference``):
training runs and image clusters are both sampled. Every trained run is scored by both protocols'
scorers, so each (training, scoring) cell of the 2 × 2 tells what training changes apart from what
scoring changes. For each cell and estimator, from the per-image MI of every (seed, case):
- each case's mean, and its share of images won (highest MI; a tie goes to the case listed first);
- the paired difference of the reference case against each other case, per seed and image; its mean with a t-interval
  and one-sided t-tests from a two-way standard error over seeds and image clusters (the sample's images
  cluster by the photo they are cut from; STL-10's are each their own);
- beside it, the within-seed uncertainty: a bootstrap that resamples the image clusters, seeds kept.
The estimand is the expected value over training runs and over images drawn like these. The verdict is
``inference.verdict``'s; one (protocol, estimator) is primary, named in params (its training and scoring
both that protocol), the rest secondary. A power analysis says how many
seeds the primary rule would need. The KSG cross-check (KSG minus its own shift null) is compared as
paired differences with the same seed-level intervals.

``results/findings.md`` states all of it; every sentence in it is generated from these numbers.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mifeatures.workflow import provenance, usage
from mifeatures.core.statistics.findings_report import KSG, KSG_GAP, report
from mifeatures.core.data.photos import source_photo_index
from mifeatures.core.statistics.inference import (bootstrap_means, holm, interval, seed_test, two_way_test,
                                                   winners)
from mifeatures.core.io import atomic_write
from mifeatures.core.protocols import PROTOCOLS

DIFFERENCE_COLUMNS = ["training", "scoring", "estimator", "case", "other", "difference", "seed_sd", "se", "df",
                      "low", "high", "p_above", "p_below_holm", "p_within_margin", "within_low", "within_high"]


def image_clusters(dataset: str, n_images: int) -> np.ndarray:
    """One cluster id per image: the sample's photo each image is cut from; any other image is its own."""
    if dataset == "sample":
        return np.array([source_photo_index(index) for index in range(n_images)])
    return np.arange(n_images)


@dataclass(frozen=True)
class Run:
    """One trained (protocol, seed, case), scored by a protocol's scorer, and the summary it wrote."""

    training: str
    scoring: str
    seed: int
    case: str
    summary: Path

    @property
    def name(self) -> str:
        return f"{self.training}/seed{self.seed}/{self.case}/scored-{self.scoring}"


@dataclass(frozen=True)
class Check:
    """One trained (protocol, seed, case): its cross-check and the per-map table of its own scoring."""

    protocol: str
    seed: int
    case: str
    crosscheck: Path
    mi: Path


def per_image(runs: list[Run]) -> dict[tuple[str, str, str], dict[str, np.ndarray]]:
    """{(training, scoring, estimator): {case: (seeds, images) per-image MI}}, seeds in ascending order.

    Every (training, scoring) cell given must have the same cases and seeds, and every run the same images.
    """
    layout = {(run.training, run.scoring, run.seed, run.case) for run in runs}
    cells = [(t, s) for t in PROTOCOLS for s in PROTOCOLS if any((run.training, run.scoring) == (t, s) for run in runs)]
    seeds = sorted({run.seed for run in runs})
    cases = list(dict.fromkeys(run.case for run in runs))
    missing = [Run(t, s, seed, c, Path()).name for t, s in cells for seed in seeds for c in cases
               if (t, s, seed, c) not in layout]
    if missing or len(layout) != len(runs):
        raise ValueError(f"need exactly one run per (training, scoring, seed, case); missing: "
                         f"{', '.join(missing) or 'none'}, given {len(runs)} runs for {len(layout)} combinations")
    frames = {(run.training, run.scoring, run.seed, run.case): pd.read_csv(run.summary) for run in runs}
    images = {tuple(frame["image"]) for frame in frames.values()}
    if len(images) != 1:
        raise ValueError(f"runs scored different images: {sorted(len(i) for i in images)} images")
    return {(t, s, estimator): {case: np.stack([frames[t, s, seed, case][column].to_numpy() for seed in seeds])
                                for case in cases}
            for t, s in cells for estimator, column in PROTOCOLS[s].estimators.items()}


def controls(runs: list[Run], confidence: float, clusters: np.ndarray) -> pd.DataFrame:
    """Per cell, control and case: the control's mean over seeds and images, with its two-way t-interval
    over seeds and image clusters."""
    values: dict[tuple[str, str, str, str], list[np.ndarray]] = {}
    for run in sorted(runs, key=lambda run: run.seed):
        for control, column in PROTOCOLS[run.scoring].controls.items():
            values.setdefault((run.training, run.scoring, control, run.case), []).append(
                pd.read_csv(run.summary)[column].to_numpy())
    rows = []
    for (training, scoring, control, case), group in values.items():
        group = np.stack(group)
        test = two_way_test(group, clusters, confidence, margin=1.0)
        rows.append({"training": training, "scoring": scoring, "control": control, "case": case,
                     "seeds": len(group), "mean_mi": group.mean(), "low": test.low, "high": test.high})
    return pd.DataFrame(rows, columns=["training", "scoring", "control", "case", "seeds", "mean_mi", "low", "high"])


def _difference_rows(key: dict, reference: str, paired: dict[str, np.ndarray], confidence: float, margin: float,
                     clusters: np.ndarray | None = None, within: dict[str, np.ndarray] | None = None) -> list[dict]:
    """Rows of ``reference`` − x for each other case x: the tests over seeds and image ``clusters`` (over seeds alone
    when not given: the cross-check's one value per seed), Holm across the comparisons for "below", the seed
    means' SD (the power analysis's) and, when given, the within-seed bootstrap interval."""
    rows, tests = [], {}
    for other, matrix in paired.items():
        by_seed = seed_test(matrix, confidence, margin)
        if clusters is None:
            tests[other] = (by_seed, by_seed.sd / np.sqrt(len(matrix)), len(matrix) - 1.0, by_seed.sd)
        else:
            test = two_way_test(matrix, clusters, confidence, margin)
            tests[other] = (test, test.se, test.df, by_seed.sd)
    for (other, (test, se, df, seed_sd)), adjusted in zip(tests.items(), holm([t[0].p_below for t in tests.values()])):
        low, high = interval(within[other], confidence) if within else (np.nan, np.nan)
        rows.append(key | {"case": reference, "other": other, "difference": paired[other].mean(),
                           "seed_sd": seed_sd, "se": se, "df": df, "low": test.low, "high": test.high,
                           "p_above": test.p_above, "p_below_holm": adjusted, "p_within_margin": test.p_within,
                           "within_low": low, "within_high": high})
    return rows


def statistics(values: dict[tuple[str, str, str], dict[str, np.ndarray]], draws: int, confidence: float,
               seed: int, margin: float, clusters: np.ndarray, reference: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-case table, paired-difference table) for every (training, scoring, estimator).

    Per case: mean MI and win share, each with its t-interval over seeds and image ``clusters`` (a share's
    clipped to [0, 1]). Differences: case ``reference`` minus each other case, paired by seed and image. Every key uses
    the same resampling draws.
    """
    case_rows, difference_rows = [], []
    for (training, scoring, estimator), by_case in values.items():
        key = {"training": training, "scoring": scoring, "estimator": estimator}
        wins = winners(by_case)
        for case, matrix in by_case.items():
            n_seeds, n_images = matrix.shape
            mean = two_way_test(matrix, clusters, confidence, margin)
            share = two_way_test(wins[case], clusters, confidence, margin)
            case_rows.append(key | {"case": case, "seeds": n_seeds, "images": n_images, "mean_mi": matrix.mean(),
                                    "low": mean.low, "high": mean.high, "win_share": wins[case].mean(),
                                    "win_low": max(share.low, 0.0), "win_high": min(share.high, 1.0)})
        if reference in by_case:
            paired = {other: by_case[reference] - m for other, m in by_case.items() if other != reference}
            difference_rows += _difference_rows(key, reference, paired, confidence, margin, clusters,
                                                bootstrap_means(paired, draws, seed, clusters))
    return pd.DataFrame(case_rows), pd.DataFrame(difference_rows, columns=DIFFERENCE_COLUMNS)


def ksg_differences(checks: list[Check], confidence: float, margin: float, reference: str) -> pd.DataFrame:
    """Per protocol: ``reference`` − x of KSG minus its shift null, and of the protocol's histogram MI on the same
    (image, map) pairs, each per seed the difference of the cases' means over their pairs; and how far the two
    estimators' differences differ (KSG's minus the histogram's, paired by seed). t-intervals over the seeds."""
    means: dict[tuple[str, str], dict[str, dict[int, float]]] = {}
    for check in checks:
        ksg = pd.read_csv(check.crosscheck)
        histogram = pd.read_csv(check.mi).set_index(["image", "map"])[PROTOCOLS[check.protocol].histogram]
        pairs = pd.MultiIndex.from_frame(ksg[["image", "map"]])
        for estimator, value in ((KSG, ksg["ksg_corrected"].mean()),
                                 (PROTOCOLS[check.protocol].histogram_name, histogram.loc[pairs].mean())):
            means.setdefault((check.protocol, estimator), {}).setdefault(check.case, {})[check.seed] = value
    rows, paired_by = [], {}
    for (protocol, estimator), by_case in means.items():
        if reference not in by_case:
            continue
        seeds = sorted(by_case[reference])
        paired = {other: np.array([[by_case[reference][s] - by_case[other][s]] for s in seeds])
                  for other in by_case if other != reference}
        paired_by[protocol, estimator] = paired
        rows += _difference_rows({"training": protocol, "scoring": protocol, "estimator": estimator}, reference,
                                 paired, confidence, margin)
    for protocol in dict.fromkeys(protocol for protocol, _ in paired_by):
        ours, theirs = paired_by.get((protocol, KSG)), paired_by.get((protocol, PROTOCOLS[protocol].histogram_name))
        if ours is not None and theirs is not None:
            gap = {other: ours[other] - theirs[other] for other in ours}
            rows += _difference_rows({"training": protocol, "scoring": protocol, "estimator": KSG_GAP}, reference,
                                     gap, confidence, margin)
    columns = [c for c in DIFFERENCE_COLUMNS if not c.startswith("within")]  # one value per seed: no images
    return pd.DataFrame(rows, columns=DIFFERENCE_COLUMNS)[columns]


def main(argv: list[str] | None = None) -> None:
    """CLI: the findings over every trained (protocol, seed, case) and both scorings of it."""
    parser = argparse.ArgumentParser(prog="mifeatures findings", description=usage.summary(__doc__))
    parser.add_argument("--run", nargs=5, action="append", required=True,
                        metavar=("TRAINING", "SCORING", "SEED", "CASE", "SUMMARY"),
                        help="one trained run, the protocol whose scorer scored it, and its summary; repeated")
    parser.add_argument("--crosscheck", nargs=5, action="append", default=[],
                        metavar=("PROTOCOL", "SEED", "CASE", "CROSSCHECK", "MI"),
                        help="one run's cross-check and the per-map table of its own protocol's scoring; repeated")
    parser.add_argument("--dataset", required=True, choices=("sample", "stl10", "folder"),
                        help="where the images come from (data.dataset): the sample's cluster by source photo")
    parser.add_argument("--bootstrap", type=int, required=True, help="resamples of the image clusters")
    parser.add_argument("--confidence", type=float, required=True, help="level of every interval")
    parser.add_argument("--seed", type=int, required=True, help="seeds the resamples")
    parser.add_argument("--margin", type=float, required=True,
                        help="nats: differences within ± it do not matter (the equivalence test)")
    parser.add_argument("--primary", nargs=2, required=True, metavar=("PROTOCOL", "ESTIMATOR"),
                        help="the (protocol, estimator) whose verdict answers the question, declared beforehand")
    parser.add_argument("--reference", required=True,
                        help="the case whose lead the findings test (findings.reference; the article's is c)")
    for table in ("cases", "differences", "controls", "ksg"):
        parser.add_argument(f"--{table}-out", required=True, help=f"{table} table to write (.csv)")
    parser.add_argument("--report-out", required=True, help="findings to write (.md)")
    args = parser.parse_args(argv)
    if args.bootstrap < 100 or not 0 < args.confidence < 1 or args.seed < 0 or not args.margin > 0:
        parser.error("need --bootstrap ≥ 100, 0 < --confidence < 1, --seed ≥ 0 and --margin > 0")
    primary = tuple(args.primary)
    if primary[0] not in PROTOCOLS or primary[1] not in PROTOCOLS[primary[0]].estimators:
        choices = {name: list(protocol.estimators) for name, protocol in PROTOCOLS.items()}
        parser.error(f"--primary {' '.join(primary)}: expected a protocol and one of its estimators, {choices}")
    runs, checks = [], []
    for *protocols, seed, case, summary in args.run:
        if not set(protocols) <= set(PROTOCOLS) or not seed.isdigit():
            parser.error(f"--run {' '.join(args.run[len(runs)])}: expected two protocols of {', '.join(PROTOCOLS)} "
                         "and a seed ≥ 0")
        runs.append(Run(*protocols, int(seed), case, Path(summary)))
    for protocol, seed, case, crosscheck, mi in args.crosscheck:
        if protocol not in PROTOCOLS or not seed.isdigit():
            parser.error(f"--crosscheck {protocol} {seed} {case}: expected a protocol of {', '.join(PROTOCOLS)} "
                         "and a seed ≥ 0")
        checks.append(Check(protocol, int(seed), case, Path(crosscheck), Path(mi)))
    run_cases = list(dict.fromkeys(run.case for run in runs))
    if len(run_cases) < 2:
        parser.error("findings compare cases: give runs of at least two")
    if args.reference not in run_cases:
        parser.error(f"--reference {args.reference}: no run of that case; the runs are of {', '.join(run_cases)}")
    try:
        values = per_image(runs)
    except ValueError as error:
        parser.error(str(error))
    n_images = next(iter(next(iter(values.values())).values())).shape[1]  # the same in every matrix (per_image)
    clusters = image_clusters(args.dataset, n_images)
    cases, differences = statistics(values, args.bootstrap, args.confidence, args.seed, args.margin, clusters,
                                    args.reference)
    calibration = controls(runs, args.confidence, clusters)
    ksg = ksg_differences(checks, args.confidence, args.margin, args.reference)
    outputs = {args.cases_out: cases, args.differences_out: differences, args.controls_out: calibration,
               args.ksg_out: ksg}
    for out, frame in outputs.items():
        with atomic_write(out, "w") as handle:
            frame.to_csv(handle, index=False)
    with atomic_write(args.report_out, "w") as handle:
        handle.write(report(cases, differences, calibration, ksg, args.confidence, args.bootstrap, primary,
                            args.margin, clusters=len(np.unique(clusters)), dataset=args.dataset,
                            reference=args.reference))
    inputs = {f"summary[{run.name}]": run.summary for run in runs}
    for check in checks:
        name = f"{check.protocol}/seed{check.seed}/{check.case}"
        inputs |= {f"crosscheck[{name}]": check.crosscheck, f"mi[{name}/scored-{check.protocol}]": check.mi}
    params = {"data.dataset": args.dataset, "findings.bootstrap": args.bootstrap,
              "findings.confidence": args.confidence,
              "findings.seed": args.seed, "findings.margin": args.margin, "findings.reference": args.reference,
              "findings.primary": {"estimator": primary[1], "protocol": primary[0]}}
    provenance.write([*outputs, args.report_out], provenance.record("findings", inputs, params))
    print(Path(args.report_out).read_text())


if __name__ == "__main__":
    main()
