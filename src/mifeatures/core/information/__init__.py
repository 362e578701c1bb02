"""Mutual information between an image and its feature maps: the estimators and both protocols' scorers."""
