"""results/findings.md from the findings' tables: every sentence generated from their numbers.

The primary verdict first, then the 2 × 2 of training and scoring, then every (training, scoring,
estimator) with its table and differences, the calibration controls, the KSG cross-check and a summary.
"Highest" is said only where the claim holds; below 5 seeds the coverage of every interval is flagged, and
with one seed only the within-seed intervals are shown and no verdict is tested. Each sentence about a
difference is worded from the test the verdict used (Holm-adjusted for "below").
"""

from __future__ import annotations

import pandas as pd

from mifeatures.core.information.ksg import KSG_JITTER
from mifeatures.core.protocols import MISMATCHED
from mifeatures.core.statistics.inference import MAX_SEEDS, POWER, sd_interval, seeds_needed, verdict

# The cross-check's estimate, set beside the protocol's headline histogram MI on the same pairs, and how far
# the two estimators' c − x differ, per seed.
KSG = "KSG − shift null"
KSG_GAP = "KSG − histogram"
ARTICLE_CASE = "c"  # the article's claim: the encoder whose maps keep the input's size keeps the most MI
OUTCOMES = {"holds": "holds", "holds_within_margin": "holds, by less than the margin", "fails": "fails",
            "fails_within_margin": "fails, by less than the margin", "equivalent": "finds no difference that matters",
            "undecided": "is undecided", None: "is not tested (one seed)"}
MIN_SEEDS = 3  # fewer, and the interval says little about another training run
FEW_SEEDS = 5  # below, an interval over seeds rests on few degrees of freedom and on normal seed means
ADVANTAGES = (0.01, 0.02)  # nats: true advantages of c the power analysis sizes the seeds for


def claim(reference: str) -> str:
    """The claim the findings test: the article's, or that ``reference`` (findings.reference) keeps the most MI."""
    return "the article's claim" if reference == ARTICLE_CASE else f"the claim that case {reference} keeps the most MI"


def cell(training: str, scoring: str) -> str:
    """How a (training, scoring) cell is named: one protocol when they agree."""
    return f"{training} protocol" if training == scoring else f"{training} training, {scoring} scoring"


def _nats(value: float) -> str:
    return f"{value:.4f}"


def _ci(low: float, high: float) -> str:
    return f"[{low:.4f}, {high:.4f}]"


def _select(table: pd.DataFrame, training: str, scoring: str, estimator: str | None = None) -> pd.DataFrame:
    rows = (table["training"] == training) & (table["scoring"] == scoring)
    return table[rows & (table["estimator"] == estimator)] if estimator is not None else table[rows]


def _side(r) -> str:
    """Where an interval lies against 0 (the cross-check's comparisons, unadjusted)."""
    return "above" if r.low > 0 else "below" if r.high < 0 else "not distinguishable from"


def _p(value: float) -> str:
    return f"{value:.2g}"


def _seed_level(r, alpha: float, comparisons: int) -> str:
    """What the verdict's own tests say of c − x: above from its one-sided test (the intersection–union rule
    needs no adjustment), below only from the Holm-adjusted test."""
    if r.low > 0:
        said = f"case {r.case} is above case {r.other}"
    elif r.p_below_holm < alpha:
        said = f"case {r.case} is below case {r.other} (Holm-adjusted p = {_p(r.p_below_holm)})"
    elif r.high < 0:
        said = (f"case {r.case} is not shown below case {r.other}: the interval lies below 0, but Holm's "
                f"correction across the {comparisons} comparisons leaves p = {_p(r.p_below_holm)}")
    else:
        said = f"case {r.case} is not distinguishable from case {r.other}"
    if r.p_within_margin < alpha:
        said += f", and the difference is within the margin (TOST p = {_p(r.p_within_margin)})"
    return said


def _layout(r, control: dict[str, float] | None) -> str:
    """What mismatched images leave of c − x (the calibration control's c − x), against the interval."""
    if not control or r.case not in control or r.other not in control:
        return ""
    left = control[r.case] - control[r.other]
    where = ("the interval lies above it" if r.low > left else "the interval lies below it" if r.high < left
             else "the interval contains it")
    return f"; mismatched images leave {_nats(left)} of it: {where}"


def _differences(paired: pd.DataFrame, confidence: float, seeds: int,
                 control: dict[str, float] | None = None) -> list[str]:
    lines, alpha = [], (1 - confidence) / 2
    for r in paired.itertuples():
        within = f"within seeds, image clusters resampled: {_ci(r.within_low, r.within_high)}"
        if seeds < 2:
            lines.append(f"- {r.case} − {r.other}: {_nats(r.difference)} ({within}).")
            continue
        within = "" if pd.isna(r.within_low) else f"; {within}"
        lines.append(f"- {r.case} − {r.other}: {_nats(r.difference)} {_ci(r.low, r.high)}: "
                     f"{_seed_level(r, alpha, len(paired))}{_layout(r, control)} (SE {_nats(r.se)} on {r.df:.1f} "
                     f"degrees of freedom; seed SD {_nats(r.seed_sd)}{within}).")
    return lines


def _control(calibration: pd.DataFrame, training: str, scoring: str, estimator: str) -> dict[str, float] | None:
    """{case: the calibration control's mean} of the control scored as ``estimator`` is, if there is one."""
    rows = calibration[(calibration["training"] == training) & (calibration["scoring"] == scoring)
                       & calibration["control"].str.endswith(f"image, {estimator}")]
    return dict(zip(rows["case"], rows["mean_mi"])) if len(rows) else None


def explanation(outcome: str, paired: pd.DataFrame, confidence: float, margin: float, reference: str) -> str:
    """Why the differences give ``outcome``: the tests that decided it, or, undecided, what each difference
    lacks."""
    alpha, n = (1 - confidence) / 2, len(paired)
    within = f"every difference is also shown within ± {margin} nats (TOST, each at {alpha:.3g})"
    above = (f"case {reference} is above every other case, each interval of the difference above 0 "
             f"(intersection–union rule: each one-sided test at {alpha:.3g}, no adjustment needed)")
    below = [r.other for r in paired.itertuples() if r.p_below_holm < alpha]
    fails = (f"case{'s' * (len(below) > 1)} {', '.join(below)} {'are' if len(below) > 1 else 'is'} above case "
             f"{reference}: the one-sided test rejects after Holm's correction across the {n} comparisons")
    if outcome == "holds":
        return f"{above}."
    if outcome == "holds_within_margin":
        return f"{above}; but {within}: case {reference} is ahead by less than a difference that matters."
    if outcome == "fails":
        return f"{fails}."
    if outcome == "fails_within_margin":
        return f"{fails}; but {within}: by less than a difference that matters."
    if outcome == "equivalent":
        return f"{within}, and none is shown above or below 0."
    reasons = []
    for r in paired.itertuples():
        if r.low <= 0 <= r.high:
            reason = f"the interval of {reference} − {r.other} contains 0"
        elif r.high < 0:
            reason = (f"{reference} − {r.other} lies below 0, but after Holm's correction its test does not "
                      f"reject (p = {_p(r.p_below_holm)})")
        else:
            continue
        if not r.p_within_margin < alpha:
            reason += f" and is not shown within ± {margin} nats"
        reasons.append(reason)
    if not reasons:  # above and below at once: tests that cannot both come from these intervals
        reasons = ["its tests contradict each other"]
    return f"not decided: {'; '.join(reasons)}."


def _power(paired: pd.DataFrame, seeds: int, n_cases: int, confidence: float, reference: str) -> str:
    if seeds < 2:
        return ("Power: the seeds needed cannot be estimated from one seed: the seed-level SD needs at least 2 "
                f"seeds ({MIN_SEEDS} recommended).")
    sd = paired["seed_sd"].max()
    needed = [seeds_needed(sd, advantage, len(paired), confidence) for advantage in ADVANTAGES]
    if any(n is None for n in needed):
        return (f"Power: the seeds needed cannot be given: the seed-level SD ({_nats(sd)} nats) is zero, or more "
                f"than {MAX_SEEDS} seeds would be needed.")
    low_sd, high_sd = sd_interval(sd, seeds, confidence)

    def count(n: int | None) -> str:
        return f"more than {MAX_SEEDS}" if n is None else str(n)

    sizes = []
    for advantage, n in zip(ADVANTAGES, needed):
        fewest, most = (seeds_needed(bound, advantage, len(paired), confidence) for bound in (low_sd, high_sd))
        sizes.append(f"of {advantage} nats: {n} seeds per case ({n * n_cases} trainings), {count(fewest)} to "
                     f"{count(most)} across the SD's interval")
    return (f"Power: at the largest seed-level SD of a difference this run measured, {_nats(sd)} nats from {seeds} "
            f"seeds ({confidence:.0%} interval {_ci(low_sd, high_sd)}, chi-square with {seeds - 1} degrees of "
            f"freedom), the rule above detects a true advantage of case {reference} over every other case with "
            f"{POWER:.0%} power with, for an advantage {'; '.join(sizes)}. These count the seeds' variance only: "
            "the images' share of the error shrinks with more photos, not with more seeds.")


def _difference_cell(row, seeds: int) -> str:
    """A difference and its seed-level interval; with one seed, its within-seed interval."""
    if seeds < 2:
        return f"{_nats(row['difference'])} {_ci(row['within_low'], row['within_high'])} within seed"
    return f"{_nats(row['difference'])} {_ci(row['low'], row['high'])}"


def _design(cases: pd.DataFrame, differences: pd.DataFrame, confidence: float, seeds: int,
            reference: str) -> list[str]:
    """The 2 × 2 of training and scoring, under each scorer's headline estimator, and what moved the verdict."""
    cells = list(dict.fromkeys(zip(cases["training"], cases["scoring"])))
    if all(training == scoring for training, scoring in cells):  # nothing scored by the other scorer
        return []
    others = list(dict.fromkeys(differences["other"]))
    lines = ["## Training × scoring", "",
             "Each trained run scored by both protocols' scorers, under each scorer's headline estimator: a "
             "change along a row is the scoring's, along a column the training's.", "",
             f"| training | scoring | estimator | {' | '.join(f'{reference} − {o}' for o in others)} | verdict |",
             f"|---|---|---|{'---|' * len(others)}---|"]
    outcomes = {}
    for training, scoring in cells:
        estimator = _select(cases, training, scoring)["estimator"].iloc[0]
        paired = _select(differences, training, scoring, estimator).set_index("other")
        if paired.empty:
            continue
        outcomes[training, scoring] = verdict(paired, confidence) if seeds >= 2 else None
        values = " | ".join(_difference_cell(paired.loc[o], seeds) for o in others)
        lines.append(f"| {training} | {scoring} | {estimator} | {values} | {OUTCOMES[outcomes[training, scoring]]} |")
    lines.append("")
    for fixed, axis, moved in (("training", 0, "scoring"), ("scoring", 1, "training")) if seeds >= 2 else ():
        for value in dict.fromkeys(key[axis] for key in outcomes):
            row = {key[1 - axis]: outcome for key, outcome in outcomes.items() if key[axis] == value}
            if len(row) == 2:
                (first, a), (second, b) = row.items()
                change = "leaves it as it is" if a == b else "changes it"
                lines.append(f"- With {value} {fixed}, the claim {OUTCOMES[a]} under {first} {moved} and "
                             f"{OUTCOMES[b]} under {second} {moved}: the {moved} {change}.")
    return [*lines, ""]


def _ksg(ksg: pd.DataFrame, seeds: int, reference: str) -> list[str]:
    if ksg.empty:
        return []
    if seeds < 2:
        lines = ["## Cross-check: KSG k-nearest-neighbour MI minus its own shift null", "",
                 f"One seed: each {reference} − x below is that seed's, on the same pairs as the histogram's, with no "
                 "interval (seed-level intervals need at least 2 seeds).", ""]
        for protocol, table in ksg.groupby("training", sort=False):
            for other, rows in table.groupby("other", sort=False):
                parts = [f"{r.estimator} {_nats(r.difference)}" for r in rows.itertuples()]
                lines.append(f"- {protocol} protocol, {reference} − {other}: {'; '.join(parts)}.")
        return [*lines, ""]
    lines = ["## Cross-check: KSG k-nearest-neighbour MI minus its own shift null", "",
             "KSG has no spatial correction of its own, so each (image, map) pair's KSG MI has its circular-shift "
             f"null subtracted, ties broken by a jitter of {KSG_JITTER} SD; {reference} − x per seed on the same "
             "pairs (the corrected protocol's on the valid region, as its primary score), with a t-interval over the "
             f"seeds, beside the histogram's on those pairs, and the paired gap between the two estimators' "
             f"{reference} − x. It is a check of the estimator on the same pairs, maps and kind of null, not an "
             "independent replication.",
             ""]
    for protocol, table in ksg.groupby("training", sort=False):
        estimators = [e for e in dict.fromkeys(table["estimator"]) if e != KSG_GAP]
        for other, rows in table.groupby("other", sort=False):
            by = {r.estimator: r for r in rows.itertuples()}
            parts = [f"{e} {_nats(by[e].difference)} {_ci(by[e].low, by[e].high)} ({_side(by[e])})" for e in estimators]
            line = f"- {protocol} protocol, {reference} − {other}: {'; '.join(parts)}"
            if KSG_GAP in by:
                gap = by[KSG_GAP]
                shown = ("the two estimators' differences are told apart" if gap.low > 0 or gap.high < 0
                         else "the two estimators' differences are not told apart")
                line += f"; KSG's minus the histogram's {_nats(gap.difference)} {_ci(gap.low, gap.high)}: {shown}"
            lines.append(f"{line}.")
    return [*lines, ""]


def report(cases: pd.DataFrame, differences: pd.DataFrame, calibration: pd.DataFrame, ksg: pd.DataFrame,
           confidence: float, draws: int, primary: tuple[str, str], margin: float, clusters: int,
           dataset: str, reference: str) -> str:
    """results/findings.md: every sentence generated from the four tables, on whether case ``reference`` keeps the
    most MI; the primary verdict first."""
    the_claim = claim(reference)
    The_claim = the_claim[0].upper() + the_claim[1:]
    percent = f"{confidence:.0%}"
    first = cases.iloc[0]
    seeds, images = int(first["seeds"]), int(first["images"])
    grouped = (f"{images} images cut from {clusters} photos, crops of one photo being alike" if dataset == "sample"
               else f"{images} images, each its own cluster")
    lines = [
        f"# Findings: does case {reference} keep the most mutual information?", "",
        f"Generated by `mifeatures findings` from {seeds} training seed{'s' * (seeds != 1)} × {images} images "
        f"per protocol and case. The estimand is the expected value over training runs and over images drawn "
        f"like these ({grouped}): each interval is a {percent} t-interval from a two-way standard error over "
        "the seeds and the image clusters (mean squares of the seed × cluster table of means, Satterthwaite's "
        "degrees of freedom), which covers another photo's images too, not only these; a difference is paired "
        f"by seed and image. Beside each difference, the within-seed uncertainty: a {percent} bootstrap "
        f"interval, {draws} resamples of the image clusters. A difference that matters is one of at least "
        f"{margin} nats (`findings.margin`). MI in nats.", "",
    ]
    if seeds < 2:
        lines += [f"**One seed**: seed-level intervals and tests need at least 2 seeds ({MIN_SEEDS} recommended, "
                  "`train.seeds`). Below are only the within-seed intervals, over the images of this one training "
                  "run, and no verdict on the claim is tested.", ""]
    elif seeds < MIN_SEEDS:
        lines += [f"**Only {seeds} seeds**: each interval rests on {seeds - 1} degree of freedom and cannot cover "
                  f"another training run's variation well; findings need at least {MIN_SEEDS} (`train.seeds`).", ""]
    elif seeds < FEW_SEEDS:
        lines += [f"**Fewer than {FEW_SEEDS} seeds** ({seeds}): the seeds' share of each standard error rests on "
                  f"{seeds - 1} degrees of freedom, so the intervals (each difference's degrees of freedom beside it) "
                  "are wide and hold their coverage only if the seed effects are normal; a verdict from them is "
                  "fragile.", ""]
    protocol, estimator = primary
    paired = _select(differences, protocol, protocol, estimator)
    n_cases = len(_select(cases, protocol, protocol, estimator))
    lines += [f"## Primary verdict: {protocol} protocol, {estimator} MI", "",
              "Named in params.yaml (`findings.primary`): the verdict that answers the question; every other "
              "(training, scoring, estimator) below is secondary. It was chosen after earlier results of this "
              "project on the whole 96×96 grid had been seen, so it is not a pre-registration.", ""]
    if paired.empty:
        lines += [f"Case {reference} or the {protocol} protocol was not run: the primary verdict is not tested.", ""]
    elif seeds < 2:
        lines += [f"**{The_claim} {OUTCOMES[None]}.**", "",
                  *_differences(paired, confidence, seeds, _control(calibration, protocol, protocol, estimator)), "",
                  _power(paired, seeds, n_cases, confidence, reference), ""]
    else:
        outcome = verdict(paired, confidence)
        lines += [f"**{The_claim} {OUTCOMES[outcome]}**: "
                  f"{explanation(outcome, paired, confidence, margin, reference)}",
                  "", *_differences(paired, confidence, seeds, _control(calibration, protocol, protocol, estimator)),
                  "", _power(paired, seeds, n_cases, confidence, reference), ""]
    lines += _design(cases, differences, confidence, seeds, reference)
    cells = list(cases.groupby(["training", "scoring", "estimator"], sort=False))
    secondary = sum(key != (protocol, *primary) for key, _ in cells)
    if seeds >= 2 and secondary:
        lines += [f"The {secondary} secondary verdicts below are each tested at level {1 - confidence:.3g} on their "
                  "own, with Holm's correction only across their own comparisons of case "
                  f"{reference}; there is no correction across them, so some may differ from the primary by "
                  "chance: they describe, they do not decide.", ""]
    verdicts = []
    for (training, scoring, estimator), table in cells:
        table = table.sort_values("mean_mi", ascending=False)
        name = cell(training, scoring)
        is_primary = (training, scoring, estimator) == (protocol, *primary)
        lines += [f"## {name}, {estimator} MI", ""]
        if seeds < 2:
            lines += ["| case | mean MI | share of images won |", "|---|---|---|"]
            lines += [f"| {r.case} | {_nats(r.mean_mi)} | {r.win_share:.1%} |" for r in table.itertuples()]
        else:
            lines += [f"| case | mean MI | {percent} CI | share of images won | {percent} CI |",
                      "|---|---|---|---|---|"]
            lines += [f"| {r.case} | {_nats(r.mean_mi)} | {_ci(r.low, r.high)} | {r.win_share:.1%} | "
                      f"[{r.win_low:.1%}, {r.win_high:.1%}] |" for r in table.itertuples()]
        lines.append("")
        paired = _select(differences, training, scoring, estimator)
        outcome = verdict(paired, confidence) if not paired.empty and seeds >= 2 else None
        best = table.iloc[0]
        if outcome == "holds":
            lines.append(f"Highest mean MI: case {best.case}, {_nats(best.mean_mi)} {_ci(best.low, best.high)}.")
        elif outcome == "holds_within_margin":
            lines.append(f"Highest mean MI: case {best.case}, {_nats(best.mean_mi)} {_ci(best.low, best.high)}, "
                         f"ahead of every other case by less than {margin} nats.")
        else:
            order = ", ".join(f"{r.case} {_nats(r.mean_mi)}" for r in table.itertuples())
            lines.append(f"Means in order: {order}; an order, not a ranking: no case is shown to be highest.")
        if paired.empty:
            lines += [f"Case {reference} was not run: {the_claim} is not tested.", ""]
            continue
        verdicts.append((training, scoring, estimator, outcome))
        label = "Primary verdict (above)" if is_primary else "Secondary verdict"
        said = (f"{OUTCOMES[outcome]}" if outcome is None
                else f"{OUTCOMES[outcome]}** under the {name} with the {estimator} estimate: "
                     f"{explanation(outcome, paired, confidence, margin, reference)}")
        lines += [*_differences(paired, confidence, seeds, _control(calibration, training, scoring, estimator)), "",
                  f"{label}: **{the_claim} {said}" + ("**." if outcome is None else ""), ""]
    for control, table in calibration.groupby("control", sort=False):
        lines += [f"## Calibration: {control}", "",
                  "Each image's maps scored, as the primary score does, against each of the next "
                  f"{MISMATCHED} images of the set (unrelated images; the sample's come from other photos), "
                  "averaged: what is left is what chance layout (shared uniform backgrounds, say) leaves between "
                  "unrelated images after the null, for that case. Each difference above says where its interval "
                  f"lies against the control's own {reference} − x, what layout alone could make of it.", ""]
        if seeds < 2:
            lines += ["| training | scoring | case | mean MI |", "|---|---|---|---|"]
            lines += [f"| {r.training} | {r.scoring} | {r.case} | {_nats(r.mean_mi)} |" for r in table.itertuples()]
        else:
            lines += [f"| training | scoring | case | mean MI | {percent} CI |", "|---|---|---|---|---|"]
            lines += [f"| {r.training} | {r.scoring} | {r.case} | {_nats(r.mean_mi)} | {_ci(r.low, r.high)} |"
                      for r in table.itertuples()]
        lines.append("")
    if "b" in set(cases.loc[cases["scoring"] == "faithful", "case"]):
        lines += ["Case b was never scored in the article's notebooks: its faithful scores here (the image "
                  "resized to b's 104×104) extend the article's method to it, an extrapolation.", ""]
    lines += _ksg(ksg, seeds, reference)
    lines += ["## Summary", ""]
    lines += [f"- {cell(training, scoring)}, {estimator}"
              f"{' (primary)' if (training, scoring, estimator) == (protocol, *primary) else ' (secondary)'}: "
              f"the claim {OUTCOMES[outcome]}." for training, scoring, estimator, outcome in verdicts]
    return "\n".join(lines) + "\n"
