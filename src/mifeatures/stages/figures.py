"""Figures stage: every chart of the article, one PNG per target.

Each ``*_figure`` function takes plain tables/arrays and returns a matplotlib Figure; the
CLI reads the stage outputs, calls one of them and saves the PNG atomically.
"""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from mifeatures.workflow import provenance, usage  # noqa: E402
from mifeatures.core.statistics.aggregation import WIN_STATISTICS  # noqa: E402
from mifeatures.core.data.images import load_images  # noqa: E402
from mifeatures.core.data.photos import source_photo  # noqa: E402
from mifeatures.core.io import atomic_write, parse_case_paths  # noqa: E402

GRID_ROWS, GRID_COLS = 4, 8
N_MAPS = GRID_ROWS * GRID_COLS


def loss_figure(losses: dict[str, pd.DataFrame]) -> plt.Figure:
    """Mean batch loss per epoch for each case (as the article plotted), over the per-step loss. Epochs count
    from 0, as the article's printed log and results/article_losses.csv do: epoch e's mean is drawn at e + 1,
    where its steps end."""
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for index, (case, frame) in enumerate(losses.items()):
        color = f"C{index}"
        steps_per_epoch = len(frame) / frame["epoch"].nunique()
        axis.plot((frame["step"] + 1) / steps_per_epoch, frame["loss"], color=color, alpha=0.25, linewidth=0.8)
        per_epoch = frame.groupby("epoch")["loss"].mean()
        axis.plot(per_epoch.index + 1, per_epoch.to_numpy(), "o-", color=color, label=f"case {case}")
    axis.set(xlabel="epochs done (the dot of epoch e, counted from 0, at e + 1)", ylabel="DeepInfoMax loss",
             title="Training loss (dots: epoch mean; faint: per step)")
    axis.legend()
    figure.tight_layout()
    return figure


def loss_table(losses: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The loss figure's data, one row per (case, step): what dvc.yaml's loss plot draws, a line per case, and
    overlays across experiments (`dvc plots diff`).

    >>> loss_table({"a": pd.DataFrame({"step": [0, 1], "epoch": [0, 0], "loss": [1.4, 1.2]})}).to_dict("records")
    [{'case': 'a', 'step': 0, 'epoch': 0, 'loss': 1.4}, {'case': 'a', 'step': 1, 'epoch': 0, 'loss': 1.2}]
    """
    return pd.concat([frame.assign(case=case)[["case", "step", "epoch", "loss"]] for case, frame in losses.items()],
                     ignore_index=True)


def image_source(dataset: str, index: int) -> str:
    """Where image ``index`` of ``data.dataset`` comes from, as the figures name it.

    >>> image_source("sample", 10), image_source("stl10", 10)
    ("sample image 10: a crop of scikit-image's 'moon' photo", 'STL-10 train image 10')
    >>> image_source("folder", 10)
    'image 10 of data.folder.path (its files in path order)'
    """
    if dataset == "sample":
        return f"sample image {index}: a crop of scikit-image's '{source_photo(index)}' photo"
    if dataset == "folder":
        return f"image {index} of data.folder.path (its files in path order)"
    return f"STL-10 train image {index}"


MAPS_ORDERS = ("index", "mi")  # figures.maps_order: the maps as the encoder numbers them, or highest MI first


def maps_figure(image: np.ndarray, maps: np.ndarray, mi: np.ndarray, mi_all_images: np.ndarray, upper: float,
                noise: float, case: str, image_index: int, source: str, order: str = "index") -> plt.Figure:
    """The image with its MI bounds, then the 32 maps in a 4×8 grid, each titled with its MI (each map min–max
    scaled on its own, as the article's map figures); the title gives the mean MI that way and as the article's
    all-images loop scaled the maps (chosen_mean_mi.png's), so the two figures' numbers are told apart. With
    ``order`` "mi" the maps go highest MI first, each titled with its index too."""
    if maps.shape[0] != N_MAPS or len(mi) != N_MAPS:
        raise ValueError(f"expected {N_MAPS} maps and MI values, got {maps.shape[0]} and {len(mi)}")
    figure = plt.figure(figsize=(16, 5.2))
    grid = figure.add_gridspec(GRID_ROWS, GRID_COLS + 3)
    axis = figure.add_subplot(grid[1:3, :2])
    axis.imshow(image, cmap="gray")
    label = source.replace(": ", ":\n", 1)
    axis.set_title(f"{label}\n({image.shape[0]}×{image.shape[1]})\n"
                   f"upper bound MI(img, img) = {upper:.2f}\nnoise bound MI(noise, img) = {noise:.2f}", fontsize=9)
    axis.axis("off")
    ranked = np.argsort(-mi, kind="stable") if order == "mi" else range(N_MAPS)
    for position, k in enumerate(ranked):
        axis = figure.add_subplot(grid[position // GRID_COLS, 3 + position % GRID_COLS])
        axis.imshow(maps[k], cmap="gray")
        axis.set_title(f"map {k}: {mi[k]:.2f}" if order == "mi" else f"{mi[k]:.2f}", fontsize=8)
        axis.axis("off")
    never_scored = " (the article never scored case b: an extrapolation of its method)" if case == "b" else ""
    figure.suptitle(f"Case {case}, image {image_index}: mean MI {mi.mean():.3f} nats over {N_MAPS} maps, each map "
                    f"min–max scaled on its own (the article's map figures)"
                    f"{', highest MI first' if order == 'mi' else ''}{never_scored}\n"
                    f"{mi_all_images.mean():.3f} with the maps scaled as the article's all-images loop "
                    "(chosen_mean_mi.png)", fontsize=11)
    return figure


def chosen_figure(summaries: dict[str, pd.DataFrame], images: list[int]) -> plt.Figure:
    """Mean MI per case for the chosen images, with each image's upper and noise bounds per case."""
    figure, axis = plt.subplots(figsize=(7, 4.5))
    width = 0.8 / len(summaries)
    for index, (case, frame) in enumerate(summaries.items()):
        rows = frame.set_index("image").loc[images]
        x = np.arange(len(images)) + (index - (len(summaries) - 1) / 2) * width
        axis.bar(x, rows["mean"], width, label=f"case {case}", color=f"C{index}")
        axis.errorbar(x, rows["mean"], yerr=[rows["mean"] - rows["min"], rows["max"] - rows["mean"]],
                      fmt="none", ecolor="black", linewidth=0.8, capsize=2)
        axis.scatter(x, rows["upper"], marker="_", s=200, color="black", zorder=3,
                     label="upper bound MI(img, img)" if index == 0 else None)
        axis.scatter(x, rows["noise"], marker="x", color="grey", zorder=3,
                     label="noise bound" if index == 0 else None)
    axis.set_xticks(np.arange(len(images)), [f"image {i}" for i in images])
    axis.set(ylabel="MI (nats)", title="Mean MI over the 32 maps, scaled as the article's all-images loop\n"
             "(bars: min–max over maps; bounds of the image at the case's map size)")
    axis.legend(fontsize=8)
    figure.tight_layout()
    return figure


def distribution_figure(summaries: dict[str, pd.DataFrame]) -> plt.Figure:
    """Distribution over all images of per-image mean and max MI, one violin per case."""
    figure, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    cases = list(summaries)
    for axis, statistic in zip(axes, WIN_STATISTICS):
        values = [summaries[case][statistic].to_numpy() for case in cases]
        axis.violinplot(values, showmedians=True)
        axis.set_xticks(np.arange(1, len(cases) + 1), [f"case {c}" for c in cases])
        axis.set(ylabel="MI (nats)",
                 title=f"Per-image {statistic} MI over the 32 maps ({len(values[0])} images)\nmiddle line: median")
    figure.tight_layout()
    return figure


def wins_figure(cases: pd.DataFrame, win_by: str) -> plt.Figure:
    """How many images each case has the highest MI on."""
    figure, axis = plt.subplots(figsize=(6, 4))
    bars = axis.bar([f"case {c}" for c in cases["case"]], cases["wins"],
                    color=[f"C{i}" for i in range(len(cases))])
    axis.bar_label(bars, [f"{w} ({s:.0%})" for w, s in zip(cases["wins"], cases["win_share"])])
    axis.set(ylabel="images won",
             title=f"Which case has the highest {win_by} MI, over {cases['images'].iloc[0]} images")
    figure.tight_layout()
    return figure


def protocols_figure(cases: pd.DataFrame, confidence: float) -> plt.Figure:
    """Per case, the mean MI with its interval under each (protocol, estimator), each run scored by its own
    protocol: faithful vs corrected, plug-in vs bias-corrected, side by side."""
    cases = cases[cases["training"] == cases["scoring"]]
    series = list(dict.fromkeys(zip(cases["training"], cases["estimator"])))
    names = list(dict.fromkeys(cases["case"]))
    width = 0.8 / len(series)
    figure, axis = plt.subplots(figsize=(10, 4.5))
    for index, (protocol, estimator) in enumerate(series):
        rows = cases[(cases["training"] == protocol) & (cases["estimator"] == estimator)].set_index("case").loc[names]
        error = [rows["mean_mi"] - rows["low"], rows["high"] - rows["mean_mi"]]
        axis.bar(np.arange(len(names)) + (index - (len(series) - 1) / 2) * width, rows["mean_mi"], width,
                 yerr=error, capsize=3, color=f"C{index}", label=f"{protocol}, {estimator}")
    axis.axhline(0, color="black", linewidth=0.8)
    axis.set_xticks(np.arange(len(names)), [f"case {case}" for case in names])
    axis.set(ylabel="mean MI per image and map (nats)",
             title=f"Mean MI with {confidence:.0%} CI over {cases['seeds'].iloc[0]} seeds × "
                   f"{cases['images'].iloc[0]} images")
    axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the bars, never over them
    figure.tight_layout()
    return figure


def save(figure: plt.Figure, out: str, job: dict) -> None:
    """Write ``figure`` as a PNG with the essentials of its provenance inside, then its full record."""
    with atomic_write(out) as handle:
        figure.savefig(handle, format="png", dpi=100, bbox_inches="tight", pad_inches=0.1,
                       metadata=provenance.png_metadata(job))
    plt.close(figure)
    provenance.write([out], job)


def main(argv: list[str] | None = None) -> None:
    """CLI: draw one figure."""
    parser = argparse.ArgumentParser(prog="mifeatures figures", description=usage.summary(__doc__))
    commands = parser.add_subparsers(dest="figure", required=True)
    loss = commands.add_parser("loss", help="training loss per epoch, all cases")
    loss.add_argument("losses", nargs="+", metavar="CASE=PATH", help="loss log of each case")
    loss.add_argument("--data", required=True, help="the figure's data to write, a row per case and step (.csv)")
    maps = commands.add_parser("maps", help="4×8 grid of one case's maps for one image")
    maps.add_argument("--maps", required=True, help="the image's maps, as the maps stage wrote them (.npy)")
    maps.add_argument("--bounds", required=True, help="its MI bounds, as the maps stage wrote them (.csv)")
    maps.add_argument("--encoder-images", required=True, help="96×96 grayscale .npy")
    maps.add_argument("--mi", required=True, help="per-map MI table of the case")
    maps.add_argument("--image", type=int, required=True, help="index of the image in the train split")
    maps.add_argument("--case", required=True, help="the case whose maps these are (its title)")
    maps.add_argument("--dataset", required=True, choices=("sample", "stl10", "folder"),
                      help="where the images come from (data.dataset), which the figure names")
    maps.add_argument("--order", required=True, choices=MAPS_ORDERS,
                      help="index: the maps as the encoder numbers them (the article's); mi: highest MI first "
                           "(figures.maps_order)")
    chosen = commands.add_parser("chosen", help="mean MI per case for the chosen images")
    chosen.add_argument("summaries", nargs="+", metavar="CASE=PATH", help="per-image summary of each case")
    chosen.add_argument("--images", type=int, nargs="+", required=True, help="image indices")
    distribution = commands.add_parser("distribution", help="per-image MI distribution per case")
    distribution.add_argument("summaries", nargs="+", metavar="CASE=PATH", help="per-image summary of each case")
    wins = commands.add_parser("wins", help="images won per case")
    wins.add_argument("--cases", required=True, help="per-case table of the aggregate stage")
    wins.add_argument("--win-by", required=True, choices=WIN_STATISTICS, help="statistic the winner was picked by")
    protocols = commands.add_parser("protocols", help="mean MI with CI per case, protocol and estimator")
    protocols.add_argument("--cases", required=True, help="per-case table of the findings stage")
    protocols.add_argument("--confidence", type=float, required=True, help="coverage of its intervals")
    for command in (loss, maps, chosen, distribution, wins, protocols):
        command.add_argument("--out", required=True, help="PNG to write")
    args = parser.parse_args(argv)

    params: dict = {}
    context: dict = {}
    if args.figure == "loss":
        paths = parse_case_paths(args.losses)
        inputs = {f"loss[{case}]": path for case, path in paths.items()}
        losses = {case: pd.read_csv(path) for case, path in paths.items()}
        figure = loss_figure(losses)
        with atomic_write(args.data, "w") as handle:
            loss_table(losses).to_csv(handle, index=False)
    elif args.figure == "maps":
        bounds = pd.read_csv(args.bounds)
        if bounds["image"].tolist() != [args.image]:
            parser.error(f"--image {args.image}: --maps and --bounds are those of image "
                         f"{', '.join(map(str, bounds['image']))} (the maps stage writes one image's)")
        table = pd.read_csv(args.mi)
        rows = table.loc[table["image"] == args.image].sort_values("map")
        image = load_images(args.encoder_images)[args.image]
        figure = maps_figure(image, np.load(args.maps)[0], rows["mi"].to_numpy(), rows["mi_all_images"].to_numpy(),
                             bounds.at[0, "upper"], bounds.at[0, "noise"], args.case, args.image,
                             image_source(args.dataset, args.image), args.order)
        inputs = {role: getattr(args, role) for role in ("maps", "bounds", "encoder_images", "mi")}
        params = {"data.dataset": args.dataset, "figures.maps_order": args.order}
        context = {"case": args.case, "image": args.image}
    elif args.figure in ("chosen", "distribution"):
        paths = parse_case_paths(args.summaries)
        inputs = {f"summary[{case}]": path for case, path in paths.items()}
        summaries = {case: pd.read_csv(path) for case, path in paths.items()}
        if args.figure == "chosen":
            figure = chosen_figure(summaries, args.images)
            params = {"figures.images": args.images}
        else:
            figure = distribution_figure(summaries)
    elif args.figure == "protocols":
        figure = protocols_figure(pd.read_csv(args.cases), args.confidence)
        inputs, params = {"cases": args.cases}, {"findings.confidence": args.confidence}
    else:
        figure = wins_figure(pd.read_csv(args.cases), args.win_by)
        inputs, params = {"cases": args.cases}, {"aggregate.win_by": args.win_by}
    job = provenance.record("figures", inputs, params, context)
    save(figure, args.out, job)
    if args.figure == "loss":
        provenance.write([args.data], job)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
