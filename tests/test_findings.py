"""The findings stage: bootstrap intervals, paired differences, wins, the verdict and the generated report."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mifeatures import provenance
from mifeatures.findings import (CLAIM_CASE, ESTIMATORS, HISTOGRAM, Run, bootstrap_means, interval, main,
                                 per_image, statistics, verdict, winners)


def test_bootstrap_interval_covers_a_known_mean_in_a_simulation():
    """Per-image MI = mean + seed effect + image effect + noise: over 300 simulated experiments of
    5 seeds × 60 images, the 95% interval covers the true mean about 95% of the time."""
    rng = np.random.default_rng(0)
    true_mean, covered, trials = 0.3, 0, 300
    for trial in range(trials):
        values = (true_mean + rng.normal(0, 0.01, (5, 1)) + rng.normal(0, 0.05, (1, 60))
                  + rng.normal(0, 0.02, (5, 60)))
        low, high = interval(bootstrap_means({"x": values}, 1000, seed=trial)["x"], 0.95)
        covered += low <= true_mean <= high
    assert 0.90 <= covered / trials <= 0.99


def test_a_draw_resamples_seeds_and_images_and_pairs_every_matrix():
    """Each draw is the mean of the matrix with its seeds and images resampled with replacement, and
    the same draw is applied to every matrix: the difference's distribution is the difference of
    the distributions, draw by draw."""
    rng = np.random.default_rng(1)
    x, y = rng.random((3, 7)), rng.random((3, 7))
    draws = bootstrap_means({"x": x, "y": y, "diff": x - y}, 50, seed=4)
    np.testing.assert_allclose(draws["diff"], draws["x"] - draws["y"], atol=1e-12)
    # The first draw, made by hand with the generator's first two calls.
    generator = np.random.default_rng(4)
    seeds = np.repeat(np.arange(3), generator.multinomial(3, np.full(3, 1 / 3), size=50)[0])
    images = np.repeat(np.arange(7), generator.multinomial(7, np.full(7, 1 / 7), size=50)[0])
    assert draws["x"][0] == pytest.approx(x[np.ix_(seeds, images)].mean(), abs=1e-12)
    # A constant matrix has a bootstrap distribution of zero width.
    assert np.ptp(bootstrap_means({"c": np.full((3, 7), 0.2)}, 50, seed=4)["c"]) == pytest.approx(0)


def test_winners_take_the_highest_and_a_tie_goes_to_the_first_case():
    values = {"a": np.array([[1.0, 2.0, 3.0]]), "c": np.array([[1.0, 3.0, 2.0]])}
    assert {case: w.tolist() for case, w in winners(values).items()} == {"a": [[1, 0, 1]], "c": [[0, 1, 0]]}


@pytest.mark.parametrize(("lows", "highs", "expected"), [
    ([0.01, 0.02], [0.05, 0.06], "holds"),
    ([0.01, -0.02], [0.05, 0.06], "undecided"),
    ([0.01, -0.06], [0.05, -0.01], "fails"),
])
def test_verdict(lows, highs, expected):
    assert verdict(pd.DataFrame({"low": lows, "high": highs})) == expected


def write_runs(folder, means, seeds=(1, 2, 3), images=40, ksg_order=None):
    """Score and cross-check tables of every (protocol, seed, case), as the stages write them, with
    per-image MI = means[protocol][case] + image effect + noise. The KSG estimate follows
    ``ksg_order`` (cases from highest to lowest) when given, else the histogram."""
    rng = np.random.default_rng(0)
    image_effect = rng.normal(0, 0.03, images)
    runs = []
    for protocol, by_case in means.items():
        for seed in seeds:
            for case, mean in by_case.items():
                per_map = mean + image_effect[:, None] + rng.normal(0, 0.01, (images, 32))
                folder.joinpath(f"{protocol}{seed}{case}").mkdir()
                paths = {name: folder / f"{protocol}{seed}{case}/{name}.csv" for name in ("summary", "mi", "ksg")}
                summary = {"image": np.arange(images), "upper": 3.0, "noise": 0.05, "max": per_map.max(1),
                           "min": per_map.min(1), "mean": per_map.mean(1), "std": per_map.std(1)}
                if protocol == "corrected":  # plug-in and Miller–Madow above the null-corrected value
                    summary |= {"mean_plugin": per_map.mean(1) + 0.05, "mean_miller_madow": per_map.mean(1) + 0.01}
                pd.DataFrame(summary).to_csv(paths["summary"], index=False)
                pd.DataFrame({"image": np.repeat(np.arange(images), 32), "map": np.tile(np.arange(32), images),
                              HISTOGRAM[protocol]: per_map.ravel()}).to_csv(paths["mi"], index=False)
                rank = ksg_order.index(case) if ksg_order else -mean
                pd.DataFrame({"image": [0, 0, 5], "map": [1, 2, 3], "ksg": 1.0 - 0.1 * rank}).to_csv(
                    paths["ksg"], index=False)
                runs.append(Run(protocol, seed, case, paths["summary"], paths["mi"], paths["ksg"]))
    return runs


def run_cli(folder, runs, *extra):
    outputs = {name: folder / f"out/{name}" for name in ("cases.csv", "differences.csv", "ksg.csv", "findings.md")}
    arguments = [item for run in runs for item in ("--run", run.protocol, str(run.seed), run.case, str(run.summary),
                                                    str(run.mi), str(run.crosscheck))]
    main([*arguments, "--bootstrap", "500", "--cases-out", str(outputs["cases.csv"]),
          "--differences-out", str(outputs["differences.csv"]), "--ksg-out", str(outputs["ksg.csv"]),
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
    assert faithful_b.mean_mi == pytest.approx(0.40, abs=0.01)
    assert f"Highest mean MI: case b, {faithful_b.mean_mi:.4f} [{faithful_b.low:.4f}, {faithful_b.high:.4f}]" in text
    c_minus_b = differences[(differences.protocol == "faithful") & (differences.other == "b")].iloc[0]
    assert c_minus_b.difference == pytest.approx(-0.10, abs=0.01) and c_minus_b.high < 0
    assert f"- c − b: {c_minus_b.difference:.4f} [{c_minus_b.low:.4f}, {c_minus_b.high:.4f}]: case c is below" in text
    assert "**The article's claim fails** under the faithful protocol with the plug-in estimate" in text
    for estimator in ESTIMATORS["corrected"]:
        assert f"**The article's claim holds** under the corrected protocol with the {estimator} estimate" in text
    assert "KSG ranks b > c > a, the histogram b > c > a on the same pairs: the orders agree." in text
    assert "Only" not in text  # three seeds
    record = json.loads(provenance.sidecar(outputs["findings.md"]).read_text())
    assert record["params"] == {"findings.bootstrap": 500, "findings.confidence": 0.95, "findings.seed": 0}
    assert len(record["inputs"]) == 3 * len(runs)


def test_report_says_when_it_cannot_decide(tmp_path):
    """Two cases of equal MI: the interval of c − a contains 0; two seeds are flagged."""
    outputs = run_cli(tmp_path, write_runs(tmp_path, {"faithful": {"a": 0.3, "c": 0.3}}, seeds=(1, 2)))
    text = outputs["findings.md"].read_text()
    assert "**The article's claim is undecided**" in text and "not distinguishable from case a" in text
    assert "**Only 2 seeds**" in text


def test_report_says_when_ksg_ranks_the_cases_otherwise(tmp_path):
    """The histogram puts c above a; a KSG estimate that puts a first is reported as disagreeing."""
    outputs = run_cli(tmp_path, write_runs(tmp_path, {"faithful": {"a": 0.2, "c": 0.3}}, ksg_order=["a", "c"]))
    assert ("KSG ranks a > c, the histogram c > a on the same pairs: the orders differ."
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
    cases, differences = statistics(per_image(runs), 200, 0.95, 0)
    assert CLAIM_CASE not in set(cases["case"]) and differences.empty
