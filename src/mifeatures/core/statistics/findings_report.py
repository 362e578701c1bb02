"""results/findings.md from the findings' tables: every sentence generated from their numbers.

The primary verdict first, then the 2 × 2 of training and scoring, then every (training, scoring,
estimator) with its table and differences, the calibration controls, the KSG cross-check and a summary.
"Highest" is said only where the claim holds; below 5 seeds the coverage of every interval is flagged.
"""

from __future__ import annotations

import pandas as pd

from mifeatures.core.information.ksg import KSG_JITTER
from mifeatures.core.statistics.inference import MAX_SEEDS, POWER, seeds_needed, verdict

CLAIM_CASE = "c"  # the article: the encoder whose maps keep the input's size keeps the most MI
OUTCOMES = {"holds": "holds", "fails": "fails", "equivalent": "finds no difference that matters",
            "undecided": "is undecided"}
EXPLANATIONS = {
    "holds": f"case {CLAIM_CASE} is above every other case, each interval of the difference above 0.",
    "fails": f"some case is above case {CLAIM_CASE}: its one-sided test rejects after Holm's correction.",
    "equivalent": "every difference lies within ± the margin, each interval inside it.",
    "undecided": "some interval of a difference contains 0 and reaches beyond the margin.",
}
MIN_SEEDS = 3  # fewer, and the interval says little about another training run
FEW_SEEDS = 5  # below, an interval over seeds rests on few degrees of freedom and on normal seed means
ADVANTAGES = (0.01, 0.02)  # nats: true advantages of c the power analysis sizes the seeds for


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
    return "above" if r.low > 0 else "below" if r.high < 0 else "not distinguishable from"


def _differences(paired: pd.DataFrame) -> list[str]:
    lines = []
    for r in paired.itertuples():
        within = ("" if pd.isna(r.within_low)
                  else f"; within seeds, images resampled: {_ci(r.within_low, r.within_high)}")
        lines.append(f"- {CLAIM_CASE} − {r.other}: {_nats(r.difference)} {_ci(r.low, r.high)}: case {CLAIM_CASE} is "
                     f"{_side(r)} case {r.other} (seed SD {_nats(r.seed_sd)}{within}).")
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


def _design(cases: pd.DataFrame, differences: pd.DataFrame, confidence: float) -> list[str]:
    """The 2 × 2 of training and scoring, under each scorer's headline estimator, and what moved the verdict."""
    cells = list(dict.fromkeys(zip(cases["training"], cases["scoring"])))
    if all(training == scoring for training, scoring in cells):  # nothing scored by the other scorer
        return []
    others = list(dict.fromkeys(differences["other"]))
    lines = ["## Training × scoring", "",
             "Each trained run scored by both protocols' scorers, under each scorer's headline estimator: a "
             "change along a row is the scoring's, along a column the training's.", "",
             f"| training | scoring | estimator | {' | '.join(f'{CLAIM_CASE} − {o}' for o in others)} | verdict |",
             f"|---|---|---|{'---|' * len(others)}---|"]
    outcomes = {}
    for training, scoring in cells:
        estimator = _select(cases, training, scoring)["estimator"].iloc[0]
        paired = _select(differences, training, scoring, estimator).set_index("other")
        if paired.empty:
            continue
        outcomes[training, scoring] = verdict(paired, confidence)
        values = " | ".join(f"{_nats(paired.loc[o, 'difference'])} {_ci(paired.loc[o, 'low'], paired.loc[o, 'high'])}"
                            for o in others)
        lines.append(f"| {training} | {scoring} | {estimator} | {values} | {OUTCOMES[outcomes[training, scoring]]} |")
    lines.append("")
    for fixed, axis, moved in (("training", 0, "scoring"), ("scoring", 1, "training")):
        for value in dict.fromkeys(key[axis] for key in outcomes):
            row = {key[1 - axis]: outcome for key, outcome in outcomes.items() if key[axis] == value}
            if len(row) == 2:
                (first, a), (second, b) = row.items()
                change = "leaves it as it is" if a == b else "changes it"
                lines.append(f"- With {value} {fixed}, the claim {OUTCOMES[a]} under {first} {moved} and "
                             f"{OUTCOMES[b]} under {second} {moved}: the {moved} {change}.")
    return [*lines, ""]


def _ksg(ksg: pd.DataFrame) -> list[str]:
    if ksg.empty:
        return []
    lines = ["## Cross-check: KSG k-nearest-neighbour MI minus its own shift null", "",
             "KSG has no spatial correction of its own, so each (image, map) pair's KSG MI has its circular-shift "
             f"null subtracted, ties broken by a jitter of {KSG_JITTER} SD; c − x per seed on the same pairs, with a "
             "t-interval over the seeds, beside the histogram's on those pairs.", ""]
    for protocol, table in ksg.groupby("training", sort=False):
        estimators = list(dict.fromkeys(table["estimator"]))
        for other, rows in table.groupby("other", sort=False):
            by = {r.estimator: r for r in rows.itertuples()}
            parts = [f"{e} {_nats(by[e].difference)} {_ci(by[e].low, by[e].high)} ({_side(by[e])})" for e in estimators]
            agree = "agree" if len({_side(r) for r in by.values()}) == 1 else "disagree"
            lines.append(f"- {protocol} protocol, {CLAIM_CASE} − {other}: {'; '.join(parts)}: the two {agree}.")
    return [*lines, ""]


def report(cases: pd.DataFrame, differences: pd.DataFrame, calibration: pd.DataFrame, ksg: pd.DataFrame,
           confidence: float, draws: int, primary: tuple[str, str], margin: float) -> str:
    """results/findings.md: every sentence generated from the four tables; the primary verdict first."""
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
    paired = _select(differences, protocol, protocol, estimator)
    n_cases = len(_select(cases, protocol, protocol, estimator))
    lines += [f"## Primary verdict: {protocol} protocol, {estimator} MI", "",
              "Declared in params.yaml (`findings.primary`) before any number was seen; every other (training, "
              "scoring, estimator) below is secondary.", ""]
    if paired.empty:
        lines += [f"Case {CLAIM_CASE} or the {protocol} protocol was not run: the primary verdict is not tested.", ""]
    else:
        outcome = verdict(paired, confidence)
        lines += [f"**The article's claim {OUTCOMES[outcome]}**: {EXPLANATIONS[outcome]}", "", *_differences(paired),
                  "", _power(paired, seeds, n_cases, confidence), ""]
    lines += _design(cases, differences, confidence)
    verdicts = []
    for (training, scoring, estimator), table in cases.groupby(["training", "scoring", "estimator"], sort=False):
        table = table.sort_values("mean_mi", ascending=False)
        name = cell(training, scoring)
        lines += [f"## {name}, {estimator} MI", "",
                  f"| case | mean MI | {percent} CI | share of images won | {percent} CI |", "|---|---|---|---|---|"]
        lines += [f"| {r.case} | {_nats(r.mean_mi)} | {_ci(r.low, r.high)} | {r.win_share:.1%} | "
                  f"[{r.win_low:.1%}, {r.win_high:.1%}] |" for r in table.itertuples()]
        lines.append("")
        paired = _select(differences, training, scoring, estimator)
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
        verdicts.append((training, scoring, estimator, outcome))
        lines += [*_differences(paired), "", f"**The article's claim {OUTCOMES[outcome]}** under the {name} "
                  f"with the {estimator} estimate: {EXPLANATIONS[outcome]}", ""]
    for control, table in calibration.groupby("control", sort=False):
        lines += [f"## Calibration: {control}", "",
                  "Each image's maps scored, as the primary score does, against the next image, whose true MI "
                  "with them is ≈ 0: what is left is the bias the estimate keeps for that case.", "",
                  f"| training | scoring | case | mean MI | {percent} CI |", "|---|---|---|---|---|"]
        lines += [f"| {r.training} | {r.scoring} | {r.case} | {_nats(r.mean_mi)} | {_ci(r.low, r.high)} |"
                  for r in table.itertuples()]
        lines.append("")
    if "b" in set(cases.loc[cases["scoring"] == "faithful", "case"]):
        lines += ["Case b was never scored in the article's notebooks: its faithful scores here (the image "
                  "resized to b's 104×104) extend the article's method to it, an extrapolation.", ""]
    lines += _ksg(ksg)
    lines += ["## Summary", ""]
    lines += [f"- {cell(training, scoring)}, {estimator}"
              f"{' (primary)' * ((training, scoring, estimator) == (primary[0], *primary))}: the claim "
              f"{OUTCOMES[outcome]}." for training, scoring, estimator, outcome in verdicts]
    return "\n".join(lines) + "\n"
