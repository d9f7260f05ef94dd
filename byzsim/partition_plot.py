"""Client × class heatmaps of a partition: look at a split before trusting it.

``partition_heatmap(counts)`` draws the ``(n, C)`` count matrix of
:func:`byzsim.partition.class_counts` (clients down, classes across) next to a bar of
each client's size ``J_w``; Byzantine clients are marked in red. ``main(argv)`` is the
command ``byzsim partition-plot CONFIG [key=value ...] [--out PATH]``: it builds the
config's dataset and partition with the same random stream as a run of that config
(:func:`client_data_for`) and saves the picture as PNG.

The picture shows the labels the clients hold before any data attack: label flipping
changes the Byzantine clients' labels at run time, not here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from .partition import ClientData, class_counts, draw_byzantine, partition_clients

__all__ = ["partition_heatmap", "client_data_for", "add_arguments", "cmd", "main"]

_BYZ_COLOR = "tab:red"
_ANNOTATE_MAX_CELLS = 400  # annotate every cell up to this many (e.g. 40 clients × 10 classes)


def partition_heatmap(
    counts: np.ndarray,
    *,
    byzantine: np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
    title: str = "",
    annotate: bool | None = None,
):
    """Draw a client × class heatmap of sample counts; return the ``Figure``.

    Parameters
    ----------
    counts : ndarray, shape (n, C), integers >= 0
        ``counts[w, c]``: samples of class ``c`` held by client ``w``
        (:func:`byzsim.partition.class_counts`).
    byzantine : ndarray, shape (n,), bool, optional
        Byzantine clients get a red tick label ("w B") and a red size bar.
    class_names : sequence of C str, optional
        Column labels (default ``0 .. C-1``).
    title : str
        Figure title; the client sizes (min / median / max) and the total follow it.
    annotate : bool, optional
        Write the count in every cell; default: when ``n * C <= 400``.
    """
    counts = np.asarray(counts)
    if counts.ndim != 2 or counts.size == 0:
        raise ValueError(f"counts must be a non-empty 2-D array (n clients, C classes), got shape {counts.shape}")
    if not np.issubdtype(counts.dtype, np.integer) or counts.min() < 0:
        raise ValueError("counts must hold integers >= 0 (samples per client and class)")
    n, C = counts.shape
    byz = np.zeros(n, bool) if byzantine is None else np.asarray(byzantine, dtype=bool)
    if byz.shape != (n,):
        raise ValueError(f"byzantine must have shape (n,) = ({n},) to match counts, got {byz.shape}")
    names = [str(c) for c in range(C)] if class_names is None else [str(c) for c in class_names]
    if len(names) != C:
        raise ValueError(f"class_names must have C = {C} entries, got {len(names)}")
    if annotate is None:
        annotate = n * C <= _ANNOTATE_MAX_CELLS

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = counts.sum(axis=1)
    fig, (ax, bx) = plt.subplots(
        1, 2, sharey=True, gridspec_kw={"width_ratios": [max(C, 3), 3]},
        figsize=(min(3.0 + 0.5 * C, 16.0), min(1.6 + 0.22 * n, 24.0)),
    )
    im = ax.imshow(counts, aspect="auto", cmap="viridis", interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.05, pad=0.02, label="samples")
    ax.set_xticks(range(C), names, fontsize=8)
    ax.set_xlabel("class")
    ax.set_ylabel("client")
    if n <= 60:
        ax.set_yticks(range(n), [f"{w} B" if byz[w] else str(w) for w in range(n)], fontsize=7)
        for w, lab in enumerate(ax.get_yticklabels()):
            if byz[w]:
                lab.set_color(_BYZ_COLOR)
    if annotate:
        hi = counts.max()
        for w, c in np.ndindex(n, C):
            ax.text(c, w, str(counts[w, c]), ha="center", va="center", fontsize=6,
                    color="black" if counts[w, c] > 0.6 * hi else "white")
    bx.barh(np.arange(n), sizes, color=np.where(byz, _BYZ_COLOR, "0.45"), height=0.8)
    bx.set_xlabel("client size $J_w$")
    bx.grid(axis="x", alpha=0.3)
    bx.tick_params(axis="y", left=False)
    summary = (f"{n} clients ({int(byz.sum())} Byzantine, red), {int(sizes.sum())} samples; "
               f"J_w min {sizes.min()} / median {int(np.median(sizes))} / max {sizes.max()}")
    fig.suptitle(f"{title}\n{summary}" if title else summary, fontsize=9)
    fig.tight_layout()
    return fig


def client_data_for(cfg) -> tuple[ClientData, np.ndarray, int]:
    """The client data of a run of ``cfg`` (a :class:`byzsim.config.Config`): its
    dataset, Byzantine mask and partition, drawn from the same random stream as the run
    (the first of the two children of ``SeedSequence(cfg.seed)``: the Byzantine mask,
    then the partition). Features are left out (``p = 0``): only labels matter here.

    Returns ``(client_data, byzantine (n,) bool, n_classes)``.
    """
    from .data import load_dataset

    ds = load_dataset(cfg.dataset, **cfg.dataset_params)
    data_seq, _ = np.random.SeedSequence(cfg.seed).spawn(2)
    rng = np.random.default_rng(data_seq)
    byz = draw_byzantine(cfg.n_clients, cfg.n_byzantine, rng, indices=cfg.byzantine_indices)
    no_features = np.empty((ds.y_train.shape[0], 0))
    cd = partition_clients(cfg.partition, no_features, ds.y_train, cfg.n_clients, byz, rng,
                           **cfg.partition_params)
    return cd, byz, ds.n_classes


def _data_setup(cfg) -> tuple:
    """The config fields that decide the client data."""
    return (cfg.dataset, repr(sorted(cfg.dataset_params.items())), cfg.partition,
            repr(sorted(cfg.partition_params.items())), cfg.n_clients, cfg.n_byzantine,
            cfg.byzantine_indices, cfg.seed)


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The arguments of ``byzsim partition-plot`` (for a subparser of the ``byzsim`` command)."""
    p.add_argument("inputs", nargs="*", metavar="CONFIG.toml | key=value",
                   help="TOML config files and key=value overrides (e.g. partition=dirichlet "
                        "partition_params.beta=0.5 n_clients=30)")
    p.add_argument("--out", "-o", default=None, metavar="PATH",
                   help="output PNG (default figures/partition-<partition>.png)")
    return p


def cmd(a: argparse.Namespace) -> int:
    """Run ``byzsim partition-plot`` with parsed arguments; return the exit status (0)."""
    from .plots import save_figure
    from .sweep import load_entries

    files = [i for i in a.inputs if "=" not in i]
    overrides = [i for i in a.inputs if "=" in i]
    if not files and not any(o.split("=")[0] in ("method", "family") for o in overrides):
        overrides.insert(0, "method=sgd")  # a config needs a method; it does not touch the data
    entries, _ = load_entries(files, overrides)
    setups = {_data_setup(e.config): e.config for e in entries}
    if len(setups) != 1:
        raise ValueError(
            f"partition-plot draws one partition, but the input gives {len(setups)} different "
            f"data setups (dataset, partition, clients or seed differ); fix them with key=value "
            f"overrides, e.g. seed=0"
        )
    cfg = next(iter(setups.values()))
    cd, byz, n_classes = client_data_for(cfg)
    shown = ", ".join(f"{k}={v}" for k, v in cfg.partition_params.items())
    title = f"{cfg.dataset}: partition {cfg.partition}" + (f" ({shown})" if shown else "") + f", seed {cfg.seed}"
    fig = partition_heatmap(class_counts(cd, n_classes), byzantine=byz, title=title)
    out = Path(a.out) if a.out else Path("figures") / f"partition-{cfg.partition}.png"
    (path,) = save_figure(fig, out.with_suffix("") if out.suffix == ".png" else out, formats=("png",))
    print(path)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m byzsim.partition_plot CONFIG [key=value ...] [--out PATH]``."""
    p = add_arguments(argparse.ArgumentParser(
        prog="byzsim partition-plot",
        description="Draw a config's partition as a client × class heatmap of sample counts (PNG)."))
    a = p.parse_args(argv)
    try:
        return cmd(a)
    except (ValueError, FileNotFoundError) as e:
        print(f"byzsim: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
