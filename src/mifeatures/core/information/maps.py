"""Feature maps of a trained encoder, as the two protocols compute them, and their place on the image.

Faithful to the article's code, ``feature_maps`` maps one image at a time in training mode, so BatchNorm
normalises with that image's own statistics (a known flaw, kept on purpose). For speed, scoring runs many
images per forward pass (``per_image_encoder``), which gives every image the maps the one-image path gives
it, bit for bit on a CPU; ``eval_encoder`` is the corrected protocol's (running statistics), after
``as_trained`` has recomputed those statistics over the training images. ``to_image_grid`` and ``valid_region``
put maps over the image pixels their content comes from.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from mifeatures.core.networks.models import build_encoder
from mifeatures.core.networks.shapes import INPUT_SIZE, RECEPTIVE_RADIUS, map_size

if TYPE_CHECKING:
    from mifeatures.core.protocols import Protocol


def training_batch_size(path: str) -> int:
    """The batch size the checkpoint's run trained with (its config's ``batch_size``)."""
    return int(torch.load(path, map_location="cpu", weights_only=True)["config"]["batch_size"])


def load_encoder(path: str, run: tuple[str, bool, int] | None = None) -> tuple[str, torch.nn.Module]:
    """Return (case, encoder) from a checkpoint written by the train stage. ``run``: the (case, adversarial
    prior, seed) the caller expects; a checkpoint of another run (copied to this one's place) is refused."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, dict) or not {"case", "state_dict"} <= checkpoint.keys():
        raise ValueError(f"{path}: not an encoder checkpoint of the train stage (needs 'case' and 'state_dict')")
    config = checkpoint.get("config", {})
    found = (checkpoint["case"], config.get("adversarial_prior"), config.get("seed"))
    if run is not None and found != tuple(run):
        raise ValueError(f"{path}: a checkpoint of case {found[0]} (adversarial prior {found[1]}, seed {found[2]}), "
                         f"not of case {run[0]} (adversarial prior {run[1]}, seed {run[2]}), the run this job reads")
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
    """A one-channel convolution computed image by image, as for a batch of one.

    On a CPU torch picks a convolution's kernel by input size: a one-channel first layer runs a plain
    kernel for one image but oneDNN for a batch, and the two round differently. Wider layers run the
    same kernel either way. The first layer is a small share of the work; tests/test_score.py holds
    the batched maps equal to the one-image ones, bit for bit, on the locked torch.
    """

    def __init__(self, conv: nn.Conv2d | nn.ConvTranspose2d):
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.conv(image) for image in x.split(1)])


def _one_image_kernel_copy(encoder: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """A copy of ``encoder`` on ``device``, gradients off, whose one-channel convolutions run image by image."""
    copied = copy.deepcopy(encoder).to(device).requires_grad_(False)
    for name, module in list(copied.named_modules()):
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)) and module.in_channels == 1:
            parent, _, child = name.rpartition(".")
            setattr(copied.get_submodule(parent), child, _OneImageKernelConv(module))
    return copied


def per_image_encoder(encoder: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """A copy of ``encoder`` on ``device`` that maps a batch as ``feature_maps`` maps each of its
    images: every BatchNorm uses each image's own statistics and the one-channel convolution runs
    image by image. ``encoder`` itself is left untouched."""
    copied = _one_image_kernel_copy(encoder, device)
    for name, module in list(copied.named_modules()):
        if isinstance(module, nn.BatchNorm2d):
            parent, _, child = name.rpartition(".")
            setattr(copied.get_submodule(parent), child, _PerImageBatchNorm(module))
    return copied


def eval_encoder(encoder: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """A copy of ``encoder`` on ``device`` in eval mode: BatchNorm normalises with its running
    statistics, so an image's maps do not depend on the other images of its batch. Every
    one-channel convolution runs image by image, so that on a CPU they do not depend on the batch size
    either, bit for bit. ``encoder`` itself is left untouched."""
    return _one_image_kernel_copy(encoder, device).eval()


def as_trained(encoder: torch.nn.Module, images: np.ndarray, batch_size: int) -> torch.nn.Module:
    """A copy of ``encoder`` whose BatchNorm running statistics are those of the network as trained: one
    cumulative pass (momentum None: every batch weighs the same, ``torch.optim.swa_utils.update_bn``) over the
    training ``images`` in training mode, in consecutive batches of the ``batch_size`` it trained with (a last
    short batch dropped, as training drops it). Training's running averages (momentum 0.1) still hold most of
    their initial values after a short run (0.9²⁰ ≈ 12 % after 20 steps), so eval mode would otherwise
    normalise with statistics no training batch had. ``encoder`` itself is left untouched."""
    usable = len(images) - len(images) % batch_size if len(images) >= batch_size else len(images)
    inputs = torch.as_tensor(images[:usable], dtype=torch.float32)[:, None]
    recomputed = copy.deepcopy(encoder).requires_grad_(False)
    torch.optim.swa_utils.update_bn(inputs.split(batch_size), recomputed)
    return recomputed


def as_scored(encoder: torch.nn.Module, protocol: Protocol, images: np.ndarray, checkpoint: str
              ) -> tuple[torch.nn.Module, str | None]:
    """The encoder as ``protocol`` scores it, and what was done to it for that, for the job's record: an eval-mode
    protocol's gets its running statistics recomputed over the training ``images`` in the batches the
    ``checkpoint`` trained with (``as_trained``); a train-mode protocol uses none, and gets the encoder as is."""
    if protocol.encoder_mode != "eval":
        return encoder, None
    batch = training_batch_size(checkpoint)
    return as_trained(encoder, images, batch), f"recomputed over the {len(images)} images in batches of {batch}"


def batched_feature_maps(per_image: torch.nn.Module, images: np.ndarray) -> np.ndarray:
    """The maps (B, 32, S, S) of 96×96 images (B, 96, 96) in one forward pass of a
    ``per_image_encoder`` (or an ``eval_encoder``), on its device."""
    device = next(per_image.parameters()).device
    # On a GPU: float32 convolutions (cuDNN's default is TF32) by kernels that give the same sums every run.
    with torch.no_grad(), torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled, benchmark=False,
                                                     deterministic=True, allow_tf32=False):
        return per_image(torch.as_tensor(images, dtype=torch.float32)[:, None].to(device)).cpu().numpy()


def protocol_maps(encoder: torch.nn.Module, case: str, protocol: Protocol, encoder_images: np.ndarray,
                  sized_images: np.ndarray | None, device: torch.device | str = "cpu"
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(reference images, maps) of the given images as ``protocol``'s scorer pairs them: its encoder mode,
    and its reference (``sized_images``, or the maps on the 96×96 grid of ``encoder_images``)."""
    device = torch.device(device)
    encoder_as = eval_encoder if protocol.encoder_mode == "eval" else per_image_encoder
    model = encoder_as(encoder, device)
    maps = batched_feature_maps(model, encoder_images)
    if protocol.reference == "grid":
        return encoder_images, to_image_grid(maps, case)
    if sized_images is None:
        raise ValueError(f"the {protocol.name} protocol pairs the maps with the images at the map size: "
                         "give sized_images")
    return sized_images, maps


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
