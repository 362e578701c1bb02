"""The embedded sample's source photos, by name, without scikit-image: which photo each image is cut from
(the figures name it, the findings cluster by it)."""

from __future__ import annotations

# Real photographs shipped inside scikit-image's wheel (no download); grayscale ones are
# replicated to three channels, which the grayscale stage averages back anyway.
SAMPLE_PHOTOS = (
    "astronaut", "brick", "camera", "chelsea", "coffee", "coins", "grass", "gravel",
    "hubble_deep_field", "immunohistochemistry", "moon", "retina", "rocket",
)  # fmt: skip

# What each photo is called, in the order images cycle through them.
PHOTO_NAMES = (*SAMPLE_PHOTOS, "stereo_motorcycle (left)", "stereo_motorcycle (right)")


def source_photo_index(index: int) -> int:
    """Which photo (of PHOTO_NAMES) sample image ``index`` is a crop of: crops of one photo are alike, so the
    findings treat them as one cluster."""
    return index % len(PHOTO_NAMES)


def source_photo(index: int) -> str:
    """The scikit-image photo that sample image ``index`` is a crop of.

    >>> source_photo(10), source_photo(25)
    ('moon', 'moon')
    """
    return PHOTO_NAMES[source_photo_index(index)]
