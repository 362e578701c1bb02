"""The findings stage: seed-level intervals and tests, the within-seed bootstrap, paired differences, wins,
the verdict, the power analysis and the generated report."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mifeatures import provenance
from mifeatures.findings import (CLAIM_CASE, ESTIMATORS, HISTOGRAM, Run, bootstrap_means, interval, main,
                                 per_image, seed_test, seeds_needed, statistics, verdict, winners)


def simulated_differences(rng, trials, seeds, images, seed_sd, image_sd, noise_sd, mean=0.0):
    """``trials`` experiments of per-(seed, image) differences c − x = mean + seed effect + image effect +
    noise, the images the same for every seed of an experiment. The estimand, the expected difference
    over training runs on these images, is mean + the images' mean effect: returned beside the values."""
    image_effects = rng.normal(0, image_sd, (trials, 1, images))
    values = (mean + rng.normal(0, seed_sd, (trials, seeds, 1)) + image_effects
              + rng.normal(0, noise_sd, (trials, seeds, images)))
    return values, mean + image_effects.mean(axis=(1, 2))


@pytest.mark.parametrize("seeds", [3, 5])
@pytest.mark.parametrize(("seed_sd", "image_sd"), [(0.028, 0.01), (0.002, 0.05)],
                         ids=["seeds vary more than images", "seeds vary less than images"])
def test_with_3_seeds_the_95_percent_interval_covers_about_75_percent(seeds, seed_sd, image_sd):
    """The bootstrap over 3 seeds (resampled with replacement) covered about 75 % whatever level was asked.
    The t-interval over the seeds' means covers the estimand within 2.5 points of 95 % in 4000 simulated
    experiments, whether training runs vary more than images (a seed SD of 0.028 nats)
    or less, at 3 and at 5 seeds."""
    rng = np.random.default_rng(seeds)
    values, truth = simulated_differences(rng, 4000, seeds, 60, seed_sd, image_sd, 0.02)
    covered = [test.low <= target <= test.high for test, target in
               ((seed_test(matrix, 0.95, 0.01), target) for matrix, target in zip(values, truth))]
    assert abs(np.mean(covered) - 0.95) <= 0.025, np.mean(covered)


def test_within_seed_bootstrap_covers_the_mean_of_the_seeds_run():
    """The bootstrap resamples images only: it is the uncertainty of the mean over the seeds actually
    trained (their effects fixed), and covers that about 95 % of the time."""
    rng = np.random.default_rng(0)
    covered, trials = 0, 300
    for trial in range(trials):
        seed_effects = rng.normal(0, 0.01, (5, 1))
        values = 0.3 + seed_effects + rng.normal(0, 0.05, (1, 60)) + rng.normal(0, 0.02, (5, 60))
        low, high = interval(bootstrap_means({"x": values}, 1000, seed=trial)["x"], 0.95)
        covered += low <= 0.3 + seed_effects.mean() <= high
    assert 0.90 <= covered / trials <= 0.99


def test_a_draw_resamples_the_images_and_pairs_every_matrix():
    """Each draw is the mean of the matrix with its images resampled with replacement and its seeds kept,
    and the same draw is applied to every matrix: a difference's distribution is the difference of the
    distributions, draw by draw."""
    rng = np.random.default_rng(1)
    x, y = rng.random((3, 7)), rng.random((3, 7))
    draws = bootstrap_means({"x": x, "y": y, "diff": x - y}, 50, seed=4)
    np.testing.assert_allclose(draws["diff"], draws["x"] - draws["y"], atol=1e-12)
    # The first draw, made by hand with the generator's first call.
    images = np.repeat(np.arange(7), np.random.default_rng(4).multinomial(7, np.full(7, 1 / 7), size=50)[0])
    assert draws["x"][0] == pytest.approx(x[:, images].mean(), abs=1e-12)
    assert np.ptp(bootstrap_means({"c": np.full((3, 7), 0.2)}, 50, seed=4)["c"]) == pytest.approx(0)


def test_seed_test_is_the_t_test_over_the_seed_means():
    """Checked against scipy's one-sample t-test and t-interval on the seeds' means."""
    from scipy import stats
    matrix = np.random.default_rng(2).normal(0.01, 0.02, (4, 30))
    means = matrix.mean(axis=1)
    test = seed_test(matrix, 0.9, 0.05)
    low, high = stats.t.interval(0.9, 3, loc=means.mean(), scale=stats.sem(means))
    assert (test.low, test.high) == (pytest.approx(low), pytest.approx(high))
    assert test.p_above == pytest.approx(stats.ttest_1samp(means, 0, alternative="greater").pvalue)
    assert test.p_below == pytest.approx(stats.ttest_1samp(means, 0, alternative="less").pvalue)
    tost = max(stats.ttest_1samp(means, -0.05, alternative="greater").pvalue,
               stats.ttest_1samp(means, 0.05, alternative="less").pvalue)
    assert test.p_within == pytest.approx(tost)
    assert np.isnan(seed_test(matrix[:1], 0.9, 0.05).low)  # one seed: no degree of freedom


def test_power_analysis_gives_the_seeds_that_reach_80_percent_in_a_simulation():
    """With the seeds `seeds_needed` gives, the "holds" rule (every one-sided test rejects) succeeds in at
    least 80 % of simulated experiments, and with two fewer seeds it does not."""
    from scipy import stats
    rng = np.random.default_rng(3)
    sd, advantage, comparisons = 0.028, 0.02, 3
    needed = seeds_needed(sd, advantage, comparisons, 0.95)

    def success(seeds):
        means = advantage + rng.normal(0, sd, (20000, comparisons, seeds))
        t = means.mean(-1) / (means.std(-1, ddof=1) / np.sqrt(seeds))
        return (t > stats.t.ppf(0.975, seeds - 1)).all(-1).mean()

    assert success(needed) >= 0.8 > success(needed - 2)
    assert seeds_needed(float("nan"), 0.01, 3, 0.95) is None


def differences(**columns) -> pd.DataFrame:
    return pd.DataFrame({"low": [-1.0, -1.0], "high": [1.0, 1.0], "p_below_holm": [0.5, 0.5],
                         "p_within_margin": [0.5, 0.5]} | columns)


@pytest.mark.parametrize(("table", "expected"), [
    (differences(low=[0.01, 0.02], high=[0.05, 0.06], p_below_holm=[1.0, 1.0]), "holds"),
    (differences(low=[0.01, -0.02]), "undecided"),
    (differences(p_below_holm=[0.9, 0.01]), "fails"),
    (differences(p_below_holm=[0.9, 0.03]), "undecided"),  # Holm-adjusted above α/2 = 0.025
    (differences(p_within_margin=[0.01, 0.02]), "equivalent"),
    (differences(p_within_margin=[0.01, 0.2]), "undecided"),
])
def test_verdict(table, expected):
    assert verdict(table, 0.95) == expected


def test_winners_take_the_highest_and_a_tie_goes_to_the_first_case():
    values = {"a": np.array([[1.0, 2.0, 3.0]]), "c": np.array([[1.0, 3.0, 2.0]])}
    assert {case: w.tolist() for case, w in winners(values).items()} == {"a": [[1, 0, 1]], "c": [[0, 1, 0]]}


def write_runs(folder, means, seeds=(1, 2, 3), images=40, ksg_order=None, seed_sd=0.0):
    """Score and cross-check tables of every (protocol, seed, case), as the stages write them, with
    per-image MI = means[protocol][case] + a (seed, case) effect of SD ``seed_sd`` + image effect + noise.
    The KSG estimate follows
    ``ksg_order`` (cases from highest to lowest) when given, else the histogram."""
    rng = np.random.default_rng(0)
    image_effect = rng.normal(0, 0.03, images)
    runs = []
    for protocol, by_case in means.items():
        for seed in seeds:
            for case, mean in by_case.items():
                per_map = (mean + rng.normal(0, seed_sd) + image_effect[:, None]
                           + rng.normal(0, 0.01, (images, 32)))
                folder.joinpath(f"{protocol}{seed}{case}").mkdir()
                paths = {name: folder / f"{protocol}{seed}{case}/{name}.csv" for name in ("summary", "mi", "ksg")}
                summary = {"image": np.arange(images), "upper": 3.0, "noise": 0.05, "max": per_map.max(1),
                           "min": per_map.min(1), "mean": per_map.mean(1), "std": per_map.std(1)}
                if protocol == "corrected":  # plug-in and Miller–Madow above the null-corrected value
                    summary |= {"mean_plugin": per_map.mean(1) + 0.05, "mean_miller_madow": per_map.mean(1) + 0.01,
                                "mean_valid_plugin": per_map.mean(1) + 0.04,
                                "mean_valid_miller_madow": per_map.mean(1) + 0.005,
                                "mean_valid_corrected": per_map.mean(1) - 0.01,
                                "mean_valid_corrected_mismatched": rng.normal(0.002, 0.001, images)}
                pd.DataFrame(summary).to_csv(paths["summary"], index=False)
                pd.DataFrame({"image": np.repeat(np.arange(images), 32), "map": np.tile(np.arange(32), images),
                              HISTOGRAM[protocol]: per_map.ravel()}).to_csv(paths["mi"], index=False)
                rank = ksg_order.index(case) if ksg_order else -mean
                pd.DataFrame({"image": [0, 0, 5], "map": [1, 2, 3], "ksg": 1.0 - 0.1 * rank}).to_csv(
                    paths["ksg"], index=False)
                runs.append(Run(protocol, seed, case, paths["summary"], paths["mi"], paths["ksg"]))
    return runs


def run_cli(folder, runs, *extra):
    outputs = {name: folder / f"out/{name}"
               for name in ("cases.csv", "differences.csv", "controls.csv", "ksg.csv", "findings.md")}
    arguments = [item for run in runs for item in ("--run", run.protocol, str(run.seed), run.case, str(run.summary),
                                                    str(run.mi), str(run.crosscheck))]
    main([*arguments, "--bootstrap", "500", "--margin", "0.01", "--primary", "corrected", "null-corrected, valid 88×88",
          "--cases-out", str(outputs["cases.csv"]),
          "--differences-out", str(outputs["differences.csv"]), "--controls-out", str(outputs["controls.csv"]),
          "--ksg-out", str(outputs["ksg.csv"]),
          "--report-out", str(outputs["findings.md"]), *extra])
    return outputs


def test_report_states_each_verdict_from_the_numbers(tmp_path):
    """Faithful: b is clearly highest (the claim fails); corrected: c is (it holds). The report's
    numbers are those of the tables, and it says whether KSG ranks the cases as the histogram does."""
    means = {"faithful": {"a": 0.20, "b": 0.40, "c": 0.30}, "corrected": {"a": 0.10, "b": 0.15, "c": 0.25}}
    runs = write_runs(tmp_path, means, ksg_order=None)
    outputs = run_cli(tmp_path, runs)
    cases = pd.read_csv(outputs["cases.csv"])
    differences = pd.read_csv(outputs["differences.csv"])
    text = outputs["findings.md"].read_text()
    assert set(zip(cases["protocol"], cases["estimator"])) == {
        (protocol, estimator) for protocol in ESTIMATORS for estimator in ESTIMATORS[protocol]}
    faithful_b = cases[(cases.protocol == "faithful") & (cases.case == "b")].iloc[0]
    assert faithful_b.low < faithful_b.mean_mi < faithful_b.high and faithful_b.win_share == 1.0
    assert (cases["win_low"] >= 0).all() and (cases["win_high"] <= 1).all()
    assert faithful_b.mean_mi == pytest.approx(0.40, abs=0.01)
    assert "Highest mean MI: case b" not in text  # only c's differences are tested: b is not shown highest
    assert f"Means in order: b {faithful_b.mean_mi:.4f}, c " in text
    corrected_c = cases[(cases.protocol == "corrected") & (cases.estimator == "null-corrected") & (cases.case == "c")]
    assert f"Highest mean MI: case c, {corrected_c.iloc[0].mean_mi:.4f}" in text
    assert text.index("## Primary verdict: corrected protocol, null-corrected, valid 88×88 MI") < text.index(
        "## faithful")
    assert "**The article's claim holds**: case c is above every other case" in text
    c_minus_b = differences[(differences.protocol == "faithful") & (differences.other == "b")].iloc[0]
    assert c_minus_b.difference == pytest.approx(-0.10, abs=0.01) and c_minus_b.high < 0
    assert f"- c − b: {c_minus_b.difference:.4f} [{c_minus_b.low:.4f}, {c_minus_b.high:.4f}]: case c is below" in text
    assert "**The article's claim fails** under the faithful protocol with the plug-in estimate" in text
    for estimator in ESTIMATORS["corrected"]:
        assert f"**The article's claim holds** under the corrected protocol with the {estimator} estimate" in text
    assert "KSG orders b > c > a, the histogram b > c > a on the same pairs: the orders are the same." in text
    assert "it does not corroborate the histogram" in text
    assert "Case b was never scored in the article's notebooks" in text
    assert "**Fewer than 5 seeds** (3)" in text and "Only" not in text
    assert "Power: at the largest seed-level SD of a difference this run measured" in text
    controls = pd.read_csv(outputs["controls.csv"])
    assert set(controls["case"]) == {"a", "b", "c"} and set(controls["protocol"]) == {"corrected"}
    assert (controls["mean_mi"].abs() < 0.01).all() and (controls["low"] < controls["mean_mi"]).all()
    assert "## Calibration: mismatched image, null-corrected, valid 88×88" in text
    record = json.loads(provenance.sidecar(outputs["findings.md"]).read_text())
    assert record["params"] == {"findings.bootstrap": 500, "findings.confidence": 0.95, "findings.seed": 0,
                                "findings.margin": 0.01,
                                "findings.primary": {"estimator": "null-corrected, valid 88×88",
                                                     "protocol": "corrected"}}
    assert len(record["inputs"]) == 3 * len(runs)
    assert provenance.sidecar(outputs["controls.csv"]).exists()


def test_report_says_when_it_cannot_decide(tmp_path):
    """Two cases of equal MI whose training runs differ: the interval of c − a contains 0 and reaches past
    the margin; two seeds are flagged."""
    runs = write_runs(tmp_path, {"faithful": {"a": 0.3, "c": 0.3}}, seeds=(1, 2), seed_sd=0.02)
    text = run_cli(tmp_path, runs)["findings.md"].read_text()
    assert "**The article's claim is undecided**" in text and "not distinguishable from case a" in text
    assert "**Only 2 seeds**" in text
    assert "Case c or the corrected protocol was not run: the primary verdict is not tested." in text


def test_report_says_when_no_difference_matters(tmp_path):
    """Two cases of equal MI and runs that agree: every interval lies within ± the margin, which is told
    apart from "undecided"."""
    text = run_cli(tmp_path, write_runs(tmp_path, {"faithful": {"a": 0.3, "c": 0.3}}))["findings.md"].read_text()
    assert "**The article's claim finds no difference that matters** under the faithful protocol" in text


def test_report_says_when_ksg_ranks_the_cases_otherwise(tmp_path):
    """The histogram puts c above a; a KSG estimate that puts a first is reported as disagreeing."""
    outputs = run_cli(tmp_path, write_runs(tmp_path, {"faithful": {"a": 0.2, "c": 0.3}}, ksg_order=["a", "c"]))
    assert ("KSG orders a > c, the histogram c > a on the same pairs: the orders differ."
            in outputs["findings.md"].read_text())
    ranking = pd.read_csv(outputs["ksg.csv"]).set_index("case")
    assert ranking.loc["a", "ksg_rank"] == 1 and ranking.loc["a", "histogram_rank"] == 2
    assert not ranking["orders_agree"].any()


def test_same_inputs_give_the_same_bytes(tmp_path):
    runs = write_runs(tmp_path, {"faithful": {"a": 0.2, "c": 0.3}})
    first = {name: path.read_bytes() for name, path in run_cli(tmp_path, runs).items()}
    second = {name: path.read_bytes() for name, path in run_cli(tmp_path, runs).items()}
    assert first == second


def test_a_missing_run_is_named(tmp_path, capsys):
    """Every protocol needs every (seed, case): a gap is a usage error naming it, and nothing is written."""
    runs = write_runs(tmp_path, {"faithful": {"a": 0.2, "c": 0.3}})
    with pytest.raises(SystemExit):
        run_cli(tmp_path, runs[:-1])
    assert "missing: faithful/seed3/c" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_statistics_without_case_c_test_no_claim(tmp_path):
    runs = write_runs(tmp_path, {"faithful": {"a": 0.2, "b": 0.3}})
    cases, differences = statistics(per_image(runs), 200, 0.95, 0, 0.01)
    assert CLAIM_CASE not in set(cases["case"]) and differences.empty


def test_schema_names_the_protocols_and_estimators_the_findings_know():
    """`findings.primary` is checked before any job against the same names the findings stage uses, and
    `score.null_shifts` is bounded by the shifts the valid region (the smaller grid) has."""
    import yaml
    from pathlib import Path
    from mifeatures.estimators import draw_shifts
    from mifeatures.score import VALID
    schema = yaml.safe_load((Path(__file__).parents[1] / "workflow/schemas/params.schema.yaml").read_text())
    primary = schema["properties"]["findings"]["properties"]["primary"]
    assert primary["properties"]["protocol"]["enum"] == list(ESTIMATORS)
    assert sorted(primary["properties"]["estimator"]["enum"]) == sorted({e for p in ESTIMATORS.values() for e in p})
    assert primary["then"]["properties"]["estimator"]["const"] == [*ESTIMATORS["faithful"]][0]
    score = schema["properties"]["score"]["properties"]
    for limit in (score["null_shifts"]["maximum"], score["ksg"]["properties"]["null_shifts"]["maximum"]):
        draw_shifts((VALID, VALID), limit)
        with pytest.raises(ValueError):
            draw_shifts((VALID, VALID), limit + 1)
