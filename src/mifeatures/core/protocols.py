"""The two ways of running the experiment, each one value: a wildcard of the workflow.

``faithful`` is the article's, flaws kept; ``corrected`` fixes them (see docs/protocols.md). A protocol says
how it trains, how its scorer sees the maps and which columns that scorer writes; the train, score,
crosscheck and findings stages and the rules read it here and nowhere else. A module of its own, with no
imports of the project, so that the stages that need a protocol do not depend on, and rerun with, anything
else.
"""

from __future__ import annotations

from dataclasses import dataclass

# Where the valid region's estimates are named: every case's map over image pixels, computed from them only.
VALID = "valid 88×88"


@dataclass(frozen=True)
class Protocol:
    name: str
    # Training: whether the prior term is played adversarially, as the official DIM code does.
    adversarial_prior: bool
    # The module of mifeatures that scores by this protocol; the score stage imports it by name, so that a
    # job's code is the stage's and its own scorer's.
    scorer: str
    # How the encoder maps an image: "train" (BatchNorm on each image's own statistics, as the article
    # scored) or "eval" (running statistics).
    encoder_mode: str
    # The image a map is paired with: "sized" (the image resized to the map's size, the article's) or
    # "grid" (the 96×96 encoder input, each map aligned over the pixels it comes from).
    reference: str
    # score.* settings its scorer takes beyond bins and noise_seed.
    score_params: tuple[str, ...]
    # Per-map column of its scorer's headline histogram MI (mi.csv), and what to call it.
    histogram: str
    histogram_name: str
    # Estimator → column of its scorer's per-image summary (summary.csv); the first is the headline.
    estimators: dict[str, str]
    # Calibration controls: estimator → summary column of an estimate whose true value is ≈ 0.
    controls: dict[str, str]

    @property
    def needs_sized_images(self) -> bool:
        """Whether its scoring reads the grayscale images at the map's size."""
        return self.reference == "sized"

    def sized_images_problem(self, given: bool) -> str | None:
        """What is wrong with a stage's --sized-images being ``given`` or not for this protocol, if anything."""
        if given == self.needs_sized_images:
            return None
        return (f"--sized-images: the {self.name} protocol {'needs' if self.needs_sized_images else 'does not take'} "
                "it (only a protocol that pairs maps with the image at their size does; the others score against "
                "--encoder-images)")


# The corrected scorer's calibration control scores each image's maps against this many unrelated images.
MISMATCHED = 3

FAITHFUL = Protocol(
    name="faithful", adversarial_prior=False, scorer="core.information.scoring", encoder_mode="train",
    reference="sized",
    score_params=(), histogram="mi_all_images", histogram_name="plug-in histogram",
    # The faithful summary's spread is over the article's all-images loop (mi_all_images).
    estimators={"plug-in": "mean"}, controls={},
)
CORRECTED = Protocol(
    name="corrected", adversarial_prior=True, scorer="core.information.corrected_scoring", encoder_mode="eval",
    reference="grid",
    score_params=("null_shifts", "null_seed"), histogram="mi_valid_corrected",
    histogram_name=f"null-corrected histogram, {VALID}",
    # The valid region first; the whole 96×96 grid stays as a sensitivity variant.
    estimators={f"null-corrected, {VALID}": "mean_valid_corrected", f"plug-in, {VALID}": "mean_valid_plugin",
                f"Miller–Madow, {VALID}": "mean_valid_miller_madow", "null-corrected": "mean_corrected",
                "plug-in": "mean_plugin", "Miller–Madow": "mean_miller_madow"},
    controls={f"mismatched image, null-corrected, {VALID}": "mean_valid_corrected_mismatched"},
)
PROTOCOLS = {protocol.name: protocol for protocol in (FAITHFUL, CORRECTED)}


def training_run(case: str, protocol: str, seed: str | int) -> tuple[str, bool, int]:
    """(case, adversarial prior, seed): what a checkpoint of that training run holds (``maps.load_encoder``).

    >>> training_run("c", "faithful", "78")
    ('c', False, 78)
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol {protocol!r} is none of {', '.join(PROTOCOLS)}")
    return case, PROTOCOLS[protocol].adversarial_prior, int(seed)
