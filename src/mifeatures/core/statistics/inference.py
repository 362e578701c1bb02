"""Seed-level inference for the findings: the training run is the unit, images the within-seed sample.

For a (seeds, images) matrix of per-image values (an MI, or a paired difference c − x): a t-interval and
one-sided t-tests over the seeds' means (S − 1 degrees of freedom, exact for normal seed means whatever
the spread of images or seeds), the two one-sided tests of equivalence within a margin (TOST), Holm's
correction across comparisons, the within-seed bootstrap that resamples the images, and the seeds a
one-sided test needs for a given power (statsmodels).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower
from statsmodels.stats.weightstats import DescrStatsW

POWER = 0.8
MAX_SEEDS = 100_000  # the power analysis's search ends here: beyond, the SD makes any study hopeless


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


def holm(p_values: list[float]) -> np.ndarray:
    """Holm-adjusted p-values; NaN throughout when any is NaN (one seed leaves no test)."""
    if np.isnan(p_values).any():
        return np.full(len(p_values), np.nan)
    return multipletests(p_values, method="holm")[1]


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


# The verdicts on the claim, mutually exclusive: each table of differences is in exactly one.
VERDICTS = ("holds", "holds_within_margin", "fails", "fails_within_margin", "equivalent", "undecided")


def verdict_of(above_all: bool, some_below: bool, all_within: bool) -> str:
    """The one verdict of a combination of the rule's three tests: c above every case (intersection–union),
    some case above c (Holm), every difference within ± the margin (TOST). Above and below at once cannot
    come from the same intervals; were it given, nothing is decided."""
    if above_all != some_below:
        side = "holds" if above_all else "fails"
        return f"{side}_within_margin" if all_within else side
    if above_all:
        return "undecided"
    return "equivalent" if all_within else "undecided"


def verdict(differences: pd.DataFrame, confidence: float) -> str:
    """The findings' rule on one (protocol, estimator)'s rows of c − x (columns low, p_below_holm,
    p_within_margin), at level α = 1 − confidence, one-sided tests at α/2 so that it reads off the
    printed two-sided intervals: *holds* when every interval lies above 0 (an intersection–union test);
    *fails* when, after Holm's correction, some case is above c; either *within the margin* too when every
    difference is also shown within ± the margin (TOST); *equivalent* when only that is shown; otherwise
    *undecided*."""
    alpha = (1 - confidence) / 2
    return verdict_of(bool((differences["low"] > 0).all()), bool((differences["p_below_holm"] < alpha).any()),
                      bool((differences["p_within_margin"] < alpha).all()))


def sd_interval(sd: float, seeds: int, confidence: float) -> tuple[float, float]:
    """The ``confidence`` interval of a normal population's SD from the SD of ``seeds`` values (chi-square with
    seeds − 1 degrees of freedom): how uncertain a power analysis built on that SD is."""
    df, tail = seeds - 1, (1 - confidence) / 2
    return (float(sd * np.sqrt(df / stats.chi2.ppf(1 - tail, df))),
            float(sd * np.sqrt(df / stats.chi2.ppf(tail, df))))
