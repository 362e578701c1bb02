"""Score stage: MI between each image and each of the 32 feature maps of a trained encoder.

Two protocols. The faithful one (``score``) is the article's code; the corrected one
(``score_corrected``) fixes what the faithful one keeps on purpose, see its docstring.

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
from mifeatures.estimators import K_SHIFTS, draw_shifts, miller_madow, spatial_null
from mifeatures.grayscale import load_images
from mifeatures.io import atomic_write
from mifeatures.mi import mutual_information, mutual_information_many
from mifeatures.models import INPUT_SIZE, N_MAPS, build_encoder, map_size, resolve_device
from mifeatures.protocols import PROTOCOLS

SUMMARY_COLUMNS = ["image", "upper", "noise", "max", "min", "mean", "std"]
# The corrected summary: max … std over ``mi_corrected``, then the means of the other estimates, on the
# whole 96×96 grid and on the valid region.
CORRECTED_SUMMARY_COLUMNS = [*SUMMARY_COLUMNS, "mean_plugin", "mean_miller_madow", "mean_valid_plugin",
                             "mean_valid_miller_madow", "mean_valid_corrected", "mean_valid_corrected_mismatched"]
# Four 3×3 layers see 4 px around a pixel: over the image's central 88×88 every case's map is computed
# from image pixels only, and every case has map pixels there.
RECEPTIVE_RADIUS = 4
VALID = INPUT_SIZE - 2 * RECEPTIVE_RADIUS


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
        return encoder(torch.as_tensor(image, dtype=torch.float32)[None, None])[0].numpy()


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


def _one_image_kernel_copy(encoder: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """A copy of ``encoder`` on ``device``, gradients off, whose convolutions run one image's kernel."""
    copied = copy.deepcopy(encoder).to(device).requires_grad_(False)
    for name, module in list(copied.named_modules()):
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            parent, _, child = name.rpartition(".")
            setattr(copied.get_submodule(parent), child, _OneImageKernelConv(module))
    return copied


def per_image_encoder(encoder: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """A copy of ``encoder`` on ``device`` that maps a batch as ``feature_maps`` maps each of its
    images: every BatchNorm uses each image's own statistics and every convolution one image's
    kernel. ``encoder`` itself is left untouched."""
    copied = _one_image_kernel_copy(encoder, device)
    for name, module in list(copied.named_modules()):
        if isinstance(module, nn.BatchNorm2d):
            parent, _, child = name.rpartition(".")
            setattr(copied.get_submodule(parent), child, _PerImageBatchNorm(module))
    return copied


def eval_encoder(encoder: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """A copy of ``encoder`` on ``device`` in eval mode: BatchNorm normalises with its running
    statistics, so an image's maps do not depend on the other images of its batch. Every
    convolution runs one image's kernel, so that on a CPU they do not depend on the batch size
    either, bit for bit. ``encoder`` itself is left untouched."""
    return _one_image_kernel_copy(encoder, device).eval()


def batched_feature_maps(per_image: torch.nn.Module, images: np.ndarray) -> np.ndarray:
    """The maps (B, 32, S, S) of 96×96 images (B, 96, 96) in one forward pass of a
    ``per_image_encoder`` (or an ``eval_encoder``), on its device."""
    device = next(per_image.parameters()).device
    # On a GPU: float32 convolutions (cuDNN's default is TF32) by kernels that give the same sums every run.
    with torch.no_grad(), torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled, benchmark=False,
                                                     deterministic=True, allow_tf32=False):
        return per_image(torch.as_tensor(images, dtype=torch.float32)[:, None].to(device)).cpu().numpy()


def to_image_grid(maps: np.ndarray, case_or_size: str | int) -> np.ndarray:
    """Maps (..., S, S) of a case (or of map size S) on the image's own 96×96 grid, pixel over the
    image pixel their content comes from.

    Every layer is a 3×3, stride-1 convolution. An unpadded one's output pixel o is centred on input
    pixel o + 1 and the side shrinks by 2; a transposed one's output o sums inputs o − 2 … o, so it
    is centred on o − 1 and the side grows by 2; padding 1 keeps both. Through any stack, map pixel
    o therefore lies over image pixel o + (96 − S)/2: case a (88) over the image's central 88×88,
    case b (104) has the image under its central 96×96, and c and d (96, d's shifts cancel) are
    aligned already.

    So b's map is cropped to its central 96×96: the 4-px frame cut off lies over no image pixel,
    it is the transposed convolutions' spill-over. a's map is padded by 4 px on each side, edge
    values repeated: that frame of the image (1472 of 9216 pixels) has no map pixel over it.
    Repeating the nearest map value keeps the map's range, hence its histogram bins, and adds no
    value the map lacks, where zeros or a constant would pile 16 % of the pixels into one bin; unlike
    a mirror it invents no structure. The frame's pairs are only as dependent as the image is smooth
    over 4 px, so case a is, if anything, scored a little low. Scoring a on its 88×88 alone would
    break the common grid: the plug-in MI's bias depends on the number of pixels.

    >>> to_image_grid(np.zeros((2, 32, 88, 88), np.float32), "a").shape
    (2, 32, 96, 96)
    >>> to_image_grid(np.arange(104.0 * 104).reshape(104, 104), 104)[0, :2].tolist()
    [420.0, 421.0]
    """
    size = map_size(case_or_size) if isinstance(case_or_size, str) else case_or_size
    if (INPUT_SIZE - size) % 2:
        raise ValueError(f"a {size}×{size} map has no centred place on the {INPUT_SIZE}×{INPUT_SIZE} grid")
    if maps.shape[-2:] != (size, size):
        raise ValueError(f"maps must end in ({size}, {size}), got {maps.shape}")
    border = (INPUT_SIZE - size) // 2
    if border > 0:
        return np.pad(maps, [(0, 0)] * (maps.ndim - 2) + [(border, border)] * 2, mode="edge")
    return maps[..., -border : size + border, -border : size + border]


def valid_region(grid: np.ndarray) -> np.ndarray:
    """The central VALID×VALID of arrays on the image's 96×96 grid: where every case's map pixels lie over
    the image and are computed from image pixels only (no zero padding, no transposed convolution's
    spill-over, no edge-padded frame), the same N = 7744 pixels for every case.

    >>> valid_region(np.zeros((2, 96, 96))).shape
    (2, 88, 88)
    """
    if grid.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
        raise ValueError(f"expected arrays on the {INPUT_SIZE}×{INPUT_SIZE} grid, got {grid.shape}")
    return grid[..., RECEPTIVE_RADIUS:INPUT_SIZE - RECEPTIVE_RADIUS, RECEPTIVE_RADIUS:INPUT_SIZE - RECEPTIVE_RADIUS]


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


def _in_chunks(estimates, images: np.ndarray, batch_size: int, bins: int, noise_seed: int
               ) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
    """Run ``estimates(chunk)`` (a tuple of (B, K) MI arrays) chunk by chunk over ``images``, whose
    upper and noise bounds come with them; return the estimates joined over all images, and the bounds.
    Only one chunk's maps exist at a time."""
    parts, upper, noise = [], np.empty(len(images)), np.empty(len(images))
    with tqdm(total=len(images), desc="score", mininterval=5, unit="image") as progress:
        for start in range(0, len(images), batch_size):
            chunk = slice(start, start + batch_size)
            parts.append(estimates(chunk))
            for index, image in enumerate(images[chunk], start):
                upper[index] = mutual_information(image, image[None], bins)[0]
                noise[index] = noise_bound(image, index, noise_seed, bins)
            progress.update(len(images[chunk]))
    return [np.concatenate(arrays) for arrays in zip(*parts)], {"upper": upper, "noise": noise}


def _per_map_table(columns: dict[str, np.ndarray]) -> pd.DataFrame:
    """One row per (image, map) from (N, K) arrays."""
    n_images = len(next(iter(columns.values())))
    return pd.DataFrame({"image": np.repeat(np.arange(n_images), N_MAPS), "map": np.tile(np.arange(N_MAPS), n_images),
                         **{name: values.ravel() for name, values in columns.items()}})


def _spread(values: np.ndarray) -> dict[str, np.ndarray]:
    """Per image (row): max, min, mean and std over the maps."""
    return {"max": values.max(axis=1), "min": values.min(axis=1), "mean": values.mean(axis=1),
            "std": values.std(axis=1)}


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

    def estimates(chunk: slice) -> tuple[np.ndarray, ...]:
        maps = batched_feature_maps(per_image, encoder_images[chunk])
        images = sized_images[chunk]
        return (mutual_information_many(images, maps, bins),
                mutual_information_many(images, map(all_images_loop_normalisation, maps), bins))

    (mi, loop), bounds = _in_chunks(estimates, sized_images, batch_size, bins, noise_seed)
    table = _per_map_table({"mi": mi, "mi_all_images": loop})
    summary = pd.DataFrame({"image": np.arange(len(loop)), **bounds, **_spread(loop)})
    return table, summary


def corrected_estimates(
    images: np.ndarray, maps: np.ndarray, bins: int, null_shifts: int, null_seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(plug-in, Miller–Madow, plug-in − spatial null) MI, each (B, K), of images (B, S, S) against
    their maps (B, K, S, S). Every image gets the same ``null_shifts`` circular shifts, drawn with
    ``null_seed``, so that every image's null is the same operation."""
    plug_in = mutual_information_many(images, maps, bins)
    madow = np.stack([miller_madow(image, image_maps, bins) for image, image_maps in zip(images, maps)])
    null = np.stack([spatial_null(image, image_maps, bins, null_shifts, null_seed)
                     for image, image_maps in zip(images, maps)])
    return plug_in, madow, plug_in - null


def score_corrected(
    encoder: torch.nn.Module, case: str, encoder_images: np.ndarray, bins: int, noise_seed: int,
    null_shifts: int = K_SHIFTS, null_seed: int = 0, device: torch.device | str = "cpu", batch_size: int = 8,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The corrected protocol: per-map table (image, map, mi, mi_miller_madow, mi_corrected, and the same
    three on the valid region: mi_valid, mi_valid_miller_madow, mi_valid_corrected) and per-image
    summary (CORRECTED_SUMMARY_COLUMNS) for every image.

    What it corrects in the faithful ``score``:
    - the encoder runs in eval mode under no_grad (``eval_encoder``): BatchNorm uses its running
      statistics, not each image's own;
    - every map is brought onto the image's 96×96 grid (``to_image_grid``), aligned with the
      image content, and scored against the 96×96 encoder input itself, never resampled: every
      case is scored on the same N = 9216 pixels;
    - besides the plug-in MI (``mi``), Miller–Madow's (``mi_miller_madow``) and the plug-in minus
      the spatial null (``mi_corrected``, see ``corrected_estimates``), which is ≈ 0 for a map
      independent of the image however smooth both are. No all-images loop normalisation: the
      raw maps are scored, as the histogram ignores each map's own scaling.
    - every estimate also on the valid region (``valid_region``), the findings' primary score: on the
      whole grid case c's zero-padded frame holds a map's extreme value in most maps and stretches its
      bins, and a's edge-padded frame repeats values, so c − a there partly measures the frames.
    - a calibration control, ``mi_valid_corrected_mismatched``: each image's maps scored, as the primary
      score, against the next image (the last against the first), whose true MI with them is ≈ 0; what
      it leaves is the bias the null does not remove for that case.
    The summary's max, min, mean and std are over ``mi_corrected``; ``mean_plugin``,
    ``mean_miller_madow`` and the ``mean_valid_*`` columns are the means of the others. ``upper`` (MI of
    the image with itself) and ``noise`` are plug-in values, as in ``score``, on the 96×96 image.

    Chunks of ``batch_size`` images, on ``device``, as in ``score``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    for side in (INPUT_SIZE, VALID):  # refuse a bad null_shifts before any work
        draw_shifts((side, side), null_shifts, null_seed)
    model = eval_encoder(encoder, torch.device(device))

    def estimates(chunk: slice) -> tuple[np.ndarray, ...]:
        maps = to_image_grid(batched_feature_maps(model, encoder_images[chunk]), case)
        images = encoder_images[chunk]
        others = encoder_images[(np.arange(len(encoder_images))[chunk] + 1) % len(encoder_images)]
        return (*corrected_estimates(images, maps, bins, null_shifts, null_seed),
                *corrected_estimates(valid_region(images), valid_region(maps), bins, null_shifts, null_seed),
                corrected_estimates(valid_region(others), valid_region(maps), bins, null_shifts, null_seed)[2])

    (plug_in, madow, corrected, valid_plug_in, valid_madow, valid_corrected, mismatched), bounds = _in_chunks(
        estimates, encoder_images, batch_size, bins, noise_seed)
    table = _per_map_table({"mi": plug_in, "mi_miller_madow": madow, "mi_corrected": corrected,
                            "mi_valid": valid_plug_in, "mi_valid_miller_madow": valid_madow,
                            "mi_valid_corrected": valid_corrected, "mi_valid_corrected_mismatched": mismatched})
    summary = pd.DataFrame({"image": np.arange(len(corrected)), **bounds, **_spread(corrected),
                            "mean_plugin": plug_in.mean(axis=1), "mean_miller_madow": madow.mean(axis=1),
                            "mean_valid_plugin": valid_plug_in.mean(axis=1),
                            "mean_valid_miller_madow": valid_madow.mean(axis=1),
                            "mean_valid_corrected": valid_corrected.mean(axis=1),
                            "mean_valid_corrected_mismatched": mismatched.mean(axis=1)})
    return table, summary


def main(argv: list[str] | None = None) -> None:
    """CLI: score one trained case over every image."""
    parser = argparse.ArgumentParser(prog="mifeatures score", description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", required=True, help="checkpoint written by the train stage")
    parser.add_argument("--encoder-images", required=True, help="96×96 grayscale .npy (encoder input)")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="faithful",
                        help="faithful: the article's scoring; corrected: eval mode, maps aligned on the "
                             "96×96 image grid, bias-corrected MI; default: %(default)s")
    parser.add_argument("--sized-images",
                        help="grayscale .npy at the case's map size; faithful protocol only, which needs it")
    parser.add_argument("--bins", type=int, default=30, help="histogram bins per axis; default: %(default)s")
    parser.add_argument("--noise-seed", type=int, default=0, help="seed of the noise bound; default: %(default)s")
    parser.add_argument("--null-shifts", type=int,
                        help="corrected protocol only: circular shifts of the spatial null; "
                             f"default: {K_SHIFTS}")
    parser.add_argument("--null-seed", type=int,
                        help="corrected protocol only: seed of the spatial null's shifts; default: 0")
    parser.add_argument("--mi-out", required=True, help="per-map table to write (.csv)")
    parser.add_argument("--summary-out", required=True, help="per-image summary to write (.csv)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch; default: %(default)s")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu",
                        help="where the encoder runs; auto: CUDA if present; default: %(default)s")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="images per forward pass; memory grows with it, not with the number of images; "
                             "default: %(default)s")
    args = parser.parse_args(argv)
    corrected = args.protocol == "corrected"
    if corrected:
        if args.sized_images is not None:
            parser.error("--sized-images is not used by the corrected protocol, which scores against the "
                         "96×96 --encoder-images")
        args.null_shifts = K_SHIFTS if args.null_shifts is None else args.null_shifts
        args.null_seed = 0 if args.null_seed is None else args.null_seed
        if args.null_seed < 0:
            parser.error(f"--null-seed must be ≥ 0, got {args.null_seed}")
        try:
            draw_shifts((INPUT_SIZE, INPUT_SIZE), args.null_shifts, args.null_seed)
        except ValueError as error:
            parser.error(f"--null-shifts: {error}")
    else:
        if args.sized_images is None:
            parser.error("the faithful protocol needs --sized-images")
        if args.null_shifts is not None or args.null_seed is not None:
            parser.error("--null-shifts and --null-seed belong to the corrected protocol "
                         "(--protocol corrected)")
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
    inputs = {"encoder": args.encoder, "encoder_images": args.encoder_images}
    # The protocol is which computation ran, like the case (the workflow will make it a wildcard), so it
    # is context; params are params.yaml values.
    params = {"score.bins": args.bins, "score.noise_seed": args.noise_seed}
    if corrected:
        table, summary = score_corrected(encoder, case, encoder_images, args.bins, args.noise_seed,
                                         args.null_shifts, args.null_seed, device, args.batch_size)
        params |= {"score.null_shifts": args.null_shifts, "score.null_seed": args.null_seed}
    else:
        sized_images = load_images(args.sized_images, map_size(case))
        table, summary = score(encoder, encoder_images, sized_images, args.bins, args.noise_seed, device,
                               args.batch_size)
        inputs["sized_images"] = args.sized_images
    for frame, out in ((table, args.mi_out), (summary, args.summary_out)):
        with atomic_write(out, "w") as handle:
            frame.to_csv(handle, index=False)
    job = provenance.record("score", inputs, params,
                            {"case": case, "protocol": args.protocol, "batch_size": args.batch_size},
                            device=str(device))
    provenance.write([args.mi_out, args.summary_out], job)
    measure = "corrected MI" if corrected else "MI"
    print(f"case {case} ({args.protocol}): mean {measure} {summary['mean'].mean():.4f} nats over "
          f"{len(summary)} images; wrote {args.mi_out} and {args.summary_out}")


if __name__ == "__main__":
    main()
