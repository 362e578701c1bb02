"""Inference for the findings over training runs and over images drawn like these.

For a (seeds, images) matrix of per-image values (an MI, or a paired difference c − x) the estimand is its
expected value over training runs and over images like these. Images come in clusters (the sample's are
crops of 15 photos, so crops of one photo are alike; an STL-10 image is its own cluster), so:
- ``two_way_test``: the standard error of the grand mean from the seed × cluster table of means, by the
  mean squares of a two-way random-effects model (seeds and clusters crossed), with Satterthwaite's
  degrees of freedom; a t-interval, one-sided t-tests and the two one-sided tests of equivalence within a
  margin (TOST) on it. A t-interval over the seeds' means alone (``seed_test``) covers only these images:
  when photos vary more than seeds it undercovers (tests/test_findings.py simulates both regimes);
- Holm's correction across comparisons; the within-seed bootstrap that resamples the image clusters; and
  the seeds a one-sided test needs for a given power (statsmodels).
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


def bootstrap_means(matrices: dict[str, np.ndarray], draws: int, seed: int,
                    clusters: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The within-seed bootstrap distribution, shape (draws,), of the mean of each (seeds, images) matrix.

    Each draw resamples the image clusters with replacement (each image its own cluster when ``clusters``,
    one id per image, is not given), the seeds kept, and applies that one draw to every matrix. A draw is a
    weight per image (its cluster's count), so its mean is Σ M·w / (S Σ w): no resampled copy of M is built.
    """
    shapes = {matrix.shape for matrix in matrices.values()}
    if len(shapes) != 1:
        raise ValueError(f"matrices differ in shape: {sorted(shapes)}")
    (n_seeds, n_images), = shapes
    ids, members = np.unique(np.arange(n_images) if clusters is None else clusters, return_inverse=True)
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(len(ids), np.full(len(ids), 1 / len(ids)), size=draws).astype(float)
    weights = counts[:, members]
    return {name: np.einsum("si,bi->b", matrix, weights) / (n_seeds * weights.sum(axis=1))
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


@dataclass(frozen=True)
class TwoWayTest:
    """A t-interval and one-sided t-tests of a (seeds, images) matrix's mean over seeds and image clusters."""

    mean: float
    se: float  # standard error of the mean
    df: float  # Satterthwaite's degrees of freedom
    low: float
    high: float
    p_above: float  # H1: the mean is above 0
    p_below: float  # H1: the mean is below 0
    p_within: float  # TOST, H1: the mean lies within ± the margin


def two_way_test(matrix: np.ndarray, clusters: np.ndarray, confidence: float, margin: float) -> TwoWayTest:
    """Inference on the mean of ``matrix`` (seeds, images) for training runs and images like these, from the
    seed × cluster table of means (``clusters``: one id per image). With mean squares
    MS_seed, MS_cluster and MS_residual of that S × C table, Var(mean) = (MS_seed + MS_cluster −
    MS_residual) / (S C), floored at the larger of the first two when negative, on Satterthwaite's degrees of
    freedom. NaN where one seed or one cluster leaves no degree of freedom."""
    ids, members = np.unique(clusters, return_inverse=True)
    n_seeds, n_clusters = matrix.shape[0], len(ids)
    mean = float(matrix.mean())
    if n_seeds < 2 or n_clusters < 2:
        return TwoWayTest(mean, *[float("nan")] * 7)
    table = np.stack([matrix[:, members == k].mean(axis=1) for k in range(n_clusters)], axis=1)
    grand = table.mean()
    seed_effects, cluster_effects = table.mean(axis=1) - grand, table.mean(axis=0) - grand
    residuals = table - grand - seed_effects[:, None] - cluster_effects[None, :]
    ms_seed = n_clusters * (seed_effects ** 2).sum() / (n_seeds - 1)
    ms_cluster = n_seeds * (cluster_effects ** 2).sum() / (n_clusters - 1)
    ms_residual = (residuals ** 2).sum() / ((n_seeds - 1) * (n_clusters - 1))
    combined = ms_seed + ms_cluster - ms_residual
    if combined <= 0:
        combined = max(ms_seed, ms_cluster)
    if combined == 0:  # every seed and cluster alike: the mean is known exactly
        return TwoWayTest(mean, 0.0, float("inf"), mean, mean, float(mean <= 0), float(mean >= 0),
                          float(abs(mean) >= margin))
    se = float(np.sqrt(combined / (n_seeds * n_clusters)))
    df = combined ** 2 / (ms_seed ** 2 / (n_seeds - 1) + ms_cluster ** 2 / (n_clusters - 1)
                          + ms_residual ** 2 / ((n_seeds - 1) * (n_clusters - 1)))
    half = float(stats.t.ppf(1 - (1 - confidence) / 2, df)) * se
    p_within = max(stats.t.sf((mean + margin) / se, df), stats.t.cdf((mean - margin) / se, df))
    return TwoWayTest(mean, se, float(df), mean - half, mean + half, float(stats.t.sf(mean / se, df)),
                      float(stats.t.cdf(mean / se, df)), float(p_within))


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
