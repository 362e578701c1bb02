"""Score stage: MI between each image and each of the 32 feature maps of a trained encoder.

Faithful to the article's code, the encoder scores one image at a time in training mode,
so BatchNorm normalises with that image's own statistics (a known flaw, kept on purpose).

The article normalised the maps two ways before the histogram, and both are kept:
- its per-image figures (images 10 and 11) min–max scaled each map on its own, which leaves
  the histogram, hence the MI, unchanged: column ``mi`` of the per-map table;
- its loop over all images took min and max over axes (0, 1, 2) of the NCHW maps, that is per
  image column, jointly over the 32 maps and all rows. That changes the MI: column
  ``mi_all_images``, from which the per-image summary (and so every all-images figure) is made,
  as the article's per-case ``*_MI.npy`` arrays were.

For speed, ``score`` runs many images per forward pass (``per_image_encoder``), which gives every
image the maps the one-image path (``feature_maps``) gives it, bit for bit on a CPU.
"""

from __future__ import annotations

import argparse
import copy

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from mifeatures import provenance
from mifeatures.grayscale import load_images
from mifeatures.io import atomic_write
from mifeatures.mi import mutual_information, mutual_information_many
from mifeatures.models import INPUT_SIZE, N_MAPS, build_encoder, map_size, resolve_device

SUMMARY_COLUMNS = ["image", "upper", "noise", "max", "min", "mean", "std"]


def load_encoder(path: str) -> tuple[str, torch.nn.Module]:
    """Return (case, encoder) from a checkpoint written by the train stage."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, dict) or not {"case", "state_dict"} <= checkpoint.keys():
        raise ValueError(f"{path}: not an encoder checkpoint of the train stage (needs 'case' and 'state_dict')")
    encoder = build_encoder(checkpoint["case"])
    encoder.load_state_dict(checkpoint["state_dict"])
    return checkpoint["case"], encoder


def feature_maps(encoder: torch.nn.Module, image: np.ndarray) -> np.ndarray:
    """The 32 maps (32, S, S) of one 96×96 image, BatchNorm in training mode as the article scored."""
    encoder.train()
    with torch.no_grad():
        return encoder(torch.from_numpy(image)[None, None])[0].numpy()


class _PerImageBatchNorm(nn.Module):
    """A training-mode BatchNorm2d that normalises each image of a batch on its own, as a batch of
    one does: folding the batch into the channels gives every (image, channel) its own mean and
    variance over H×W. No running statistics are read or written."""

    def __init__(self, norm: nn.BatchNorm2d):
        super().__init__()
        self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, *spatial = x.shape
        weight, bias = self.norm.weight.repeat(batch), self.norm.bias.repeat(batch)
        folded = F.batch_norm(x.reshape(1, batch * channels, *spatial), None, None, weight, bias,
                              training=True, eps=self.norm.eps)
        return folded.reshape(x.shape)


class _OneImageKernelConv(nn.Module):
    """A convolution computed by the kernel torch picks for one image.

    On a CPU torch picks by input size: a one-channel first layer runs a plain kernel for one image
    but oneDNN for a batch, and the two round differently. Such a layer is run image by image;
    it is a small share of the work.
    """

    def __init__(self, conv: nn.Conv2d | nn.ConvTranspose2d):
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._kernel(x[:1]) == self._kernel(x):
            return self.conv(x)
        return torch.cat([self.conv(image) for image in x.split(1)])

    def _kernel(self, x: torch.Tensor) -> torch._C._ConvBackend:
        # torch's own choice, through a private function: torch is pinned to 2.13 (pyproject.toml).
        conv = self.conv
        return torch._C._select_conv_backend(x, conv.weight, conv.bias, list(conv.stride), list(conv.padding),
                                             list(conv.dilation), conv.transposed, list(conv.output_padding),
                                             conv.groups)


def per_image_encoder(encoder: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """A copy of ``encoder`` on ``device`` that maps a batch as ``feature_maps`` maps each of its
    images: every BatchNorm uses each image's own statistics and every convolution one image's
    kernel. ``encoder`` itself is left untouched."""
    copied = copy.deepcopy(encoder).to(device).requires_grad_(False)
    for name, module in list(copied.named_modules()):
        parent, _, child = name.rpartition(".")
        if isinstance(module, nn.BatchNorm2d):
            setattr(copied.get_submodule(parent), child, _PerImageBatchNorm(module))
        elif isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            setattr(copied.get_submodule(parent), child, _OneImageKernelConv(module))
    return copied


def batched_feature_maps(per_image: torch.nn.Module, images: np.ndarray) -> np.ndarray:
    """The maps (B, 32, S, S) of 96×96 images (B, 96, 96) in one forward pass of a
    ``per_image_encoder``, on its device."""
    device = next(per_image.parameters()).device
    # On a GPU: float32 convolutions (cuDNN's default is TF32) by kernels that give the same sums every run.
    with torch.no_grad(), torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled, benchmark=False,
                                                     deterministic=True, allow_tf32=False):
        return per_image(torch.from_numpy(images)[:, None].to(device)).cpu().numpy()


def all_images_loop_normalisation(maps: np.ndarray) -> np.ndarray:
    """The article's all-images loop: ``(M - M.min((0,1,2))) / (M.max((0,1,2)) - M.min((0,1,2)) + 1e-8)``
    on the (1, 32, H, W) maps, in their float32; one scale per image column, shared by all maps.

    >>> all_images_loop_normalisation(np.array([[[0, 2], [1, 4]], [[1, 0], [0, 8]]], np.float32)).tolist()
    [[[0.0, 0.25], [1.0, 0.5]], [[1.0, 0.0], [0.0, 1.0]]]
    """
    low = maps.min(axis=(0, 1), keepdims=True)
    return (maps - low) / (maps.max(axis=(0, 1), keepdims=True) - low + np.float32(1e-8))


def noise_bound(image: np.ndarray, index: int, seed: int, bins: int) -> float:
    """MI between ``image`` and N(0, 1) noise seeded by (seed, image index), so it is reproducible."""
    noise = np.random.default_rng([seed, index]).standard_normal(image.shape)
    return float(mutual_information(image, noise[None], bins)[0])


def score(
    encoder: torch.nn.Module, encoder_images: np.ndarray, sized_images: np.ndarray, bins: int,
    noise_seed: int, device: torch.device | str = "cpu", batch_size: int = 8,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-map MI table (image, map, mi, mi_all_images) and per-image summary (SUMMARY_COLUMNS, over
    ``mi_all_images`` as the article's all-images loop) for every image.

    The encoder runs on ``device``, ``batch_size`` images per forward pass; a chunk's maps are
    dropped once its MI is known, so memory does not grow with the number of images. On a CPU,
    batches beyond a few images are slower: their activations no longer fit in cache.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    if len(encoder_images) != len(sized_images):
        raise ValueError(f"{len(encoder_images)} encoder images but {len(sized_images)} sized images")
    per_image = per_image_encoder(encoder, torch.device(device))
    n_images = len(encoder_images)
    mi, loop = np.empty((n_images, N_MAPS)), np.empty((n_images, N_MAPS))
    upper, noise = np.empty(n_images), np.empty(n_images)
    with tqdm(total=n_images, desc="score", mininterval=5, unit="image") as progress:
        for start in range(0, n_images, batch_size):
            chunk = slice(start, start + batch_size)
            images = sized_images[chunk]
            maps = batched_feature_maps(per_image, encoder_images[chunk])
            mi[chunk] = mutual_information_many(images, maps, bins)
            loop[chunk] = mutual_information_many(images, map(all_images_loop_normalisation, maps), bins)
            for index, image in enumerate(images, start):
                upper[index] = mutual_information(image, image[None], bins)[0]
                noise[index] = noise_bound(image, index, noise_seed, bins)
            progress.update(len(images))
    table = pd.DataFrame({"image": np.repeat(np.arange(n_images), N_MAPS),
                          "map": np.tile(np.arange(N_MAPS), n_images), "mi": mi.ravel(),
                          "mi_all_images": loop.ravel()})
    summary = pd.DataFrame({"image": np.arange(n_images), "upper": upper, "noise": noise,
                            "max": loop.max(axis=1), "min": loop.min(axis=1), "mean": loop.mean(axis=1),
                            "std": loop.std(axis=1)})
    return table, summary


def main(argv: list[str] | None = None) -> None:
    """CLI: score one trained case over every image."""
    parser = argparse.ArgumentParser(prog="mifeatures score", description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", required=True, help="checkpoint written by the train stage")
    parser.add_argument("--encoder-images", required=True, help="96×96 grayscale .npy (encoder input)")
    parser.add_argument("--sized-images", required=True, help="grayscale .npy at the case's map size")
    parser.add_argument("--bins", type=int, default=30, help="histogram bins per axis; default: %(default)s")
    parser.add_argument("--noise-seed", type=int, default=0, help="seed of the noise bound; default: %(default)s")
    parser.add_argument("--mi-out", required=True, help="per-map table to write (.csv)")
    parser.add_argument("--summary-out", required=True, help="per-image summary to write (.csv)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch; default: %(default)s")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu",
                        help="where the encoder runs; auto: CUDA if present; default: %(default)s")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="images per forward pass; memory grows with it, not with the number of images; "
                             "default: %(default)s")
    args = parser.parse_args(argv)
    if args.bins < 2:
        parser.error(f"--bins must be ≥ 2, got {args.bins}")
    if args.batch_size < 1:
        parser.error(f"--batch-size must be ≥ 1, got {args.batch_size}")
    try:
        device = resolve_device(args.device)
    except ValueError:
        parser.error("--device is cuda but no CUDA device is available; use auto or cpu")
    torch.set_num_threads(args.threads)
    # batched_feature_maps turns cuDNN's TF32 off while it runs; off for the whole job too, so that
    # the record below reports the float settings the maps were computed with.
    torch.backends.cudnn.allow_tf32 = False
    case, encoder = load_encoder(args.encoder)
    encoder_images = load_images(args.encoder_images, INPUT_SIZE)
    sized_images = load_images(args.sized_images, map_size(case))
    table, summary = score(encoder, encoder_images, sized_images, args.bins, args.noise_seed, device,
                           args.batch_size)
    for frame, out in ((table, args.mi_out), (summary, args.summary_out)):
        with atomic_write(out, "w") as handle:
            frame.to_csv(handle, index=False)
    job = provenance.record(
        "score", {"encoder": args.encoder, "encoder_images": args.encoder_images, "sized_images": args.sized_images},
        {"score.bins": args.bins, "score.noise_seed": args.noise_seed},
        {"case": case, "batch_size": args.batch_size}, device=str(device))
    provenance.write([args.mi_out, args.summary_out], job)
    print(f"case {case}: mean MI {summary['mean'].mean():.4f} nats over {len(summary)} images; "
          f"wrote {args.mi_out} and {args.summary_out}")


if __name__ == "__main__":
    main()
