"""Report figures (seaborn on matplotlib's Agg backend): functions of report tables that return
PNG bytes, or None when the table has nothing to draw."""

from __future__ import annotations

import io
import math

import pandas as pd

MAX_HEATMAPS = 12  # per figure; a report with more models lists the rest in its tables


def family_order() -> list[str]:
    """Zoo family labels in registry order (the colours of the clean-vs-robust figure)."""
    from robustart.zoo.registry import FAMILIES

    return [f.label for f in FAMILIES.values()]


def _setup():
    import matplotlib

    matplotlib.use("Agg", force=True)  # no display; also keeps a GUI backend from starting
    import matplotlib.pyplot as plt

    from robustart.errors import need

    sns = need("seaborn", "`robustart report` (its figures)")

    sns.set_theme(style="whitegrid", context="paper", font_scale=1.1)
    # Labels are user text (model, dataset, sample names): a `$` must not start mathtext, whose
    # parser fails on such names. No figure label here uses mathtext.
    matplotlib.rcParams["text.parse_math"] = False
    return plt, sns


def to_png(fig, dpi: int = 150) -> bytes:
    plt, _ = _setup()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    return buf.getvalue()


def _form_kind(form: str) -> str:
    f = str(form).lower()
    if f == "fp":
        return "FP"
    if f in ("binary", "bnn", "binarized", "w1a1"):
        return "binarized"
    return "quantized"


def scatter_clean_vs_robust(points: pd.DataFrame) -> bytes | None:
    """Clean vs robust accuracy, one panel per kind of robustness; colour = family, marker = form."""
    if not len(points):
        return None
    plt, sns = _setup()
    df = points.assign(form=points["form"].map(_form_kind))  # the legend's marker groups: FP / quantized / binarized
    kinds = list(dict.fromkeys(df["kind"]))
    ncol = min(3, len(kinds))
    nrow = math.ceil(len(kinds) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.6 * ncol, 4.2 * nrow), squeeze=False)
    fams = set(df["family"])
    order = family_order()
    hue_order = [f for f in order if f in fams] + sorted(fams - set(order))
    style_order = [s for s in ("FP", "quantized", "binarized") if s in set(df["form"])]
    for ax, kind in zip(axes.flat, kinds):
        sub = df[df["kind"] == kind]
        sns.scatterplot(data=sub, x="clean", y="robust", hue="family", hue_order=hue_order, style="form",
                        style_order=style_order, s=90, ax=ax, legend=kind == kinds[-1])
        lo = min(sub["clean"].min(), sub["robust"].min())
        ax.plot([0, 100], [0, 100], ls=":", c="grey", lw=1)  # robust = clean
        ax.set_xlim(max(0, lo - 10), 100)
        ax.set_ylim(max(0, min(sub["robust"].min(), lo) - 10), 100)
        ax.set_title(kind)
        ax.set_xlabel("clean top-1 (%)")
        ax.set_ylabel("robust accuracy (%)")
        if len(sub) <= 12:
            for _, r in sub.iterrows():
                ax.annotate(r["model"], (r["clean"], r["robust"]), fontsize=7, xytext=(4, 3), textcoords="offset points")
    for ax in list(axes.flat)[len(kinds):]:
        ax.set_visible(False)
    last = list(axes.flat)[len(kinds) - 1]
    if last.get_legend() is not None:  # outside the panels, so it never hides a point
        sns.move_legend(last, "upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, title=None, frameon=False)
    fig.tight_layout()
    return to_png(fig)


def _heatmaps(tables: list[tuple[str, pd.DataFrame]], cbar_label: str, cmap: str, fmt: str = ".0f",
              vmin: float = 0, vmax: float = 100) -> bytes | None:
    if not tables:
        return None
    plt, sns = _setup()
    tables = tables[:MAX_HEATMAPS]
    ncol = min(2, len(tables))
    nrow = math.ceil(len(tables) / ncol)
    h = max(t.shape[0] for _, t in tables)
    w = max(t.shape[1] for _, t in tables)
    fig, axes = plt.subplots(nrow, ncol, figsize=(1.6 + 0.9 * w * ncol + 2.2 * ncol, 1.0 + 0.38 * h * nrow + 0.6 * nrow),
                             squeeze=False)
    for ax, (title, t) in zip(axes.flat, tables):
        sns.heatmap(t, annot=True, fmt=fmt, cmap=cmap, vmin=vmin, vmax=vmax, linewidths=0.5, ax=ax,
                    cbar_kws={"label": cbar_label}, annot_kws={"fontsize": 8})
        ax.grid(False)
        ax.tick_params(axis="y", labelrotation=0)
        ax.set_facecolor("#eeeeee")  # cells not run show as grey, not as a colour of the scale
        ax.set_title(title, fontsize=10)
    for ax in list(axes.flat)[len(tables):]:
        ax.set_visible(False)
    fig.tight_layout()
    return to_png(fig)


def corruption_heatmaps(cells: pd.DataFrame) -> bytes | None:
    """Top-1 error (%) per corruption x severity, one panel per model and dataset."""
    from robustart.reports.tables import error_table

    tables = []
    for (model, dataset, impl, jpeg), grp in cells.groupby(["model", "dataset", "impl", "jpeg"], sort=False):
        t = error_table(grp).reindex(columns=[1, 2, 3, 4, 5]) * 100.0
        t.index.name, t.columns.name = "corruption", "severity"
        extra = "" if impl == "torch" and not jpeg else f" [{impl}{'+jpeg' if jpeg else ''}]"
        tables.append((f"{model} — {dataset}{extra}", t))
    return _heatmaps(tables, "top-1 error (%)", "rocket_r")


def imagenet_s_heatmaps(cells: pd.DataFrame) -> bytes | None:
    """Top-1 (%) per decoder x resize backend, one panel per model and dataset."""
    tables = []
    for (model, dataset, geometry), grp in cells.groupby(["model", "dataset", "geometry"], sort=False):
        t = grp.pivot_table(index="decoder", columns="resize", values="top1", aggfunc="first")
        tables.append((f"{model} — {dataset}" + ("" if geometry == "eval" else f" [{geometry}]"), t))
    if not tables:
        return None
    lo = min(float(t.min().min()) for _, t in tables)
    hi = max(float(t.max().max()) for _, t in tables)
    # system noise moves accuracy by a few points: a 0-100 scale would hide it
    return _heatmaps(tables, "top-1 (%)", "viridis", fmt=".1f", vmin=math.floor(lo) - 1, vmax=math.ceil(hi) + 1)


def bit_width_curves(curves: pd.DataFrame) -> bytes | None:
    """Accuracy vs weight bit width, one panel per measure, one line per architecture."""
    if not len(curves):
        return None
    plt, sns = _setup()
    kinds = list(dict.fromkeys(curves["kind"]))
    ncol = min(3, len(kinds))
    nrow = math.ceil(len(kinds) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.6 * ncol, 3.8 * nrow), squeeze=False)
    for ax, kind in zip(axes.flat, kinds):
        sub = curves[curves["kind"] == kind]
        sns.lineplot(data=sub, x="bits", y="value", hue="arch", marker="o", ax=ax, legend=ax is axes.flat[0])
        ax.set_xscale("log", base=2)
        ticks = sorted(set(curves["bits"]))
        ax.set_xticks(ticks, [f"{int(b)}" for b in ticks])
        ax.set_xlabel("weight bits")
        ax.set_ylabel("accuracy (%)")
        ax.set_title(kind)
    for ax in list(axes.flat)[len(kinds):]:
        ax.set_visible(False)
    fig.tight_layout()
    return to_png(fig)


def leaderboard_bars(df: pd.DataFrame, value: str, label: str, by: str = "model", hue: str | None = None,
                     title: str = "") -> bytes | None:
    """A horizontal bar chart of one leaderboard column (top 30 rows)."""
    d = df.dropna(subset=[value])
    if not len(d):
        return None
    plt, sns = _setup()
    d = d.head(30)
    n_bars = d[by].nunique() * (d[hue].nunique() if hue else 1)
    fig, ax = plt.subplots(figsize=(7, 1.0 + 0.32 * max(n_bars, 2)))
    sns.barplot(data=d, y=by, x=value, hue=hue, ax=ax, orient="h")
    ax.set_xlabel(label)
    ax.set_ylabel("")
    ax.set_xlim(0, 100)
    if title:
        ax.set_title(title)
    if hue:
        sns.move_legend(ax, "lower right", fontsize=8, title=None)
    fig.tight_layout()
    return to_png(fig)
