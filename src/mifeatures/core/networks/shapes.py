"""The encoders' shapes as numbers, without torch: what the workflow plans with (map sizes, image sizes) is
read at parse time, where importing torch would cost every `snakemake` call over a second.
``mifeatures.core.networks.models`` builds the encoders these sizes describe, and checks its output against them.
"""

from __future__ import annotations

from dataclasses import dataclass

INPUT_SIZE = 96
N_MAPS = 32
# Side of each case's feature maps: a 96 → 88 (conv), b 96 → 104 (transposed conv), c 96 → 96 (padded
# conv), d 96 → 98 → 100 → 98 → 96.
MAP_SIZES = {"a": 88, "b": 104, "c": 96, "d": 96}
# Four 3×3 layers see 4 px around a pixel: over the image's central 88×88 every case's map is computed
# from image pixels only, and every case has map pixels there (the valid region, mifeatures.core.information.maps).
RECEPTIVE_RADIUS = 4
VALID = INPUT_SIZE - 2 * RECEPTIVE_RADIUS


def map_size(case: str) -> int:
    """Side length of the feature maps of ``case``; the image is resized to it for critics and MI.

    >>> map_size("b")
    104
    """
    if case not in MAP_SIZES:
        raise ValueError(f"unknown case {case!r}; expected one of {', '.join(MAP_SIZES)}")
    return MAP_SIZES[case]


def global_conv_size(map_size: int) -> int:
    """Side of the global critic's conv output: two unpadded 3×3 convolutions of the map."""
    return map_size - 4


@dataclass(frozen=True)
class Critics:
    """The critics' widths (params.yaml's train.critic_channels and train.global_units; the article's 64 and 256):
    the channels of every critic's hidden convolutions, and the units of the global critic's MLP."""

    channels: int
    units: int

    def __post_init__(self):
        if self.channels < 1 or self.units < 1:
            raise ValueError(f"the critics' widths must be ≥ 1, got {self.channels} channels and {self.units} units")

    def global_weights(self, map_size: int) -> int:
        """Weights of the global critic's first Linear, which sees every conv output: most of a run's memory.

        >>> Critics(64, 256).global_weights(map_size("c"))  # the ≈ 139 M of the article's code
        138674176
        """
        return self.channels * global_conv_size(map_size) ** 2 * self.units
