"""Pictures of a library: a 2-D/3-D map of its vectors, and contact sheets of query results.

``plot_embeddings`` reduces the stored vectors of a model with PCA (numpy's SVD) and draws them
with matplotlib (Agg backend, imported only here), coloured by a column of the ``photos`` view.
``contact_sheet`` draws query results as a PNG grid (Pillow only) or a self-contained HTML page.
"""

from __future__ import annotations

import base64
import html
import io
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from imgvec.atomic import atomic_write
from imgvec.decode.images import decode, read_file
from imgvec.errors import ImageError, ImgvecError
from imgvec.storage import store, user_sql

if TYPE_CHECKING:
    from imgvec.api import Library, QueryResult

__all__ = [
    "CELL_HEIGHT",
    "CELL_WIDTH",
    "PlotInfo",
    "columns",
    "contact_sheet",
    "pca",
    "plot_embeddings",
]

METHODS = ("pca",)
"""Reduction methods. Only PCA: t-SNE/UMAP would need scikit-learn or umap-learn."""
MAX_LEGEND = 12
"""At most this many legend entries; the least frequent values beyond are grouped as "other"."""
OTHER = "other"
NONE_LABEL = "(none)"
PLOT_SIZE_PX = (1000, 800)
PLOT_DPI = 120
PLOT_THUMB_PX = 48

CELL_WIDTH = 160
"""Contact sheet cell: a square thumbnail area of CELL_WIDTH, then two lines of text."""
CELL_HEIGHT = 200
_THUMB_BOX = 148
_LABEL_SIZE = 13
_HTML_THUMB = 160


# --- the embedding plot --------------------------------------------------------------------------


@dataclass(frozen=True)
class PlotInfo:
    path: Path
    points: int
    dims: int
    color_by: str
    method: str
    model: str
    legend: list[str] = field(default_factory=list)
    """The legend's values in order (most frequent first; "other" last when values were grouped);
    empty for a numeric column drawn with a colour bar."""
    explained_variance: list[float] = field(default_factory=list)
    """PCA: the fraction of the total variance along each drawn component, descending."""
    thumbnails: int = 0
    """How many thumbnails were drawn (2-D only; unreadable files are skipped)."""


def columns(library: Library) -> list[str]:
    """The columns of the ``photos`` view that points can be coloured by."""
    return user_sql.run(library.engine, "SELECT * FROM photos WHERE 0 = 1").columns


def pca(vectors: np.ndarray, dims: int) -> tuple[np.ndarray, list[float]]:
    """Project ``vectors`` (n x d) on their first ``dims`` principal components.

    Returns the coordinates (n x dims) and each component's fraction of the total variance.
    Signs are fixed (each component's largest loading is positive), so the result is
    deterministic. Missing components (fewer samples or dimensions than ``dims``) are zeros.
    """
    data = np.asarray(vectors, dtype=np.float64)
    centred = data - data.mean(axis=0)
    u, s, vt = np.linalg.svd(centred, full_matrices=False)
    signs = np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(axis=1)])
    signs[signs == 0] = 1.0
    coords = (u * s * signs)[:, :dims]
    variance = s**2
    total = float(variance.sum())
    ratios = [float(v / total) if total > 0 else 0.0 for v in variance[:dims]]
    if coords.shape[1] < dims:
        pad = dims - coords.shape[1]
        coords = np.hstack([coords, np.zeros((len(coords), pad))])
        ratios += [0.0] * pad
    return coords, ratios


def plot_embeddings(
    library: Library,
    out: Path,
    dims: int = 2,
    color_by: str = "folder",
    method: str = "pca",
    thumbnails: int = 12,
    model: str | None = None,
) -> PlotInfo:
    """Draw the stored vectors of the active (or named) model as a PNG scatter plot."""
    out = Path(out)
    if dims not in (2, 3):
        raise ImgvecError(f"dims must be 2 or 3, not {dims}")
    if method not in METHODS:
        raise ImgvecError(f"unknown method {method!r}; use one of: {', '.join(METHODS)}")
    if out.suffix.lower() != ".png":
        raise ImgvecError(f"the plot is a PNG file: {out} should end in .png")
    valid = columns(library)
    if color_by not in valid:
        raise ImgvecError(f"no column {color_by!r} to colour by; use one of: {', '.join(valid)}")

    row = library.find_model(model) if model else library.active_model_row()
    model_label = f"{row.name}/{row.layer}"
    with library.session() as session:
        ids, vectors = store.all_vectors(session, row.id, row.dim)
    meta = user_sql.run(
        library.engine, f'SELECT id, path, "{color_by}" FROM photos', max_rows=10**9
    )
    by_id = {int(r[0]): (str(r[1]), r[2]) for r in meta.rows}
    keep = np.array([int(i) in by_id for i in ids], dtype=bool)
    ids, vectors = ids[keep], vectors[keep]
    if len(ids) < 3:
        raise ImgvecError(
            f"a plot needs at least 3 images with vectors for {model_label}; "
            f"the library has {len(ids)}"
        )
    paths = [by_id[int(i)][0] for i in ids]
    values = [by_id[int(i)][1] for i in ids]

    coords, ratios = pca(vectors, dims)
    info = _draw(out, coords, ratios, paths, values, color_by, model_label, thumbnails)
    return PlotInfo(
        path=out,
        points=len(ids),
        dims=dims,
        color_by=color_by,
        method=method,
        model=model_label,
        legend=info[0],
        explained_variance=ratios,
        thumbnails=info[1],
    )


def _is_numeric(values: Sequence[Any]) -> bool:
    present = [v for v in values if v is not None]
    return (
        bool(present)
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present)
        and len(set(present)) > MAX_LEGEND
    )


def _categories(values: Sequence[Any]) -> tuple[list[str], list[str]]:
    """Each point's legend label, and the legend (most frequent first, "other" last)."""
    labels = [NONE_LABEL if v is None else str(v) for v in values]
    counts = Counter(labels)
    ranked = sorted(counts, key=lambda v: (-counts[v], v))
    if len(ranked) <= MAX_LEGEND:
        return labels, ranked
    shown = set(ranked[: MAX_LEGEND - 1])
    return [v if v in shown else OTHER for v in labels], [*ranked[: MAX_LEGEND - 1], OTHER]


def _short(text: str, limit: int = 44) -> str:
    return text if len(text) <= limit else text[: limit // 2 - 1] + "…" + text[-(limit // 2) :]


def _draw(
    out: Path,
    coords: np.ndarray,
    ratios: list[float],
    paths: list[str],
    values: list[Any],
    color_by: str,
    model_label: str,
    thumbnails: int,
) -> tuple[list[str], int]:
    try:
        import matplotlib
        from matplotlib.figure import Figure
        from matplotlib.offsetbox import AnnotationBbox, OffsetImage
    except ImportError as error:
        raise ImgvecError("imgvec plot needs matplotlib: pip install matplotlib") from error

    dims = coords.shape[1]
    width, height = PLOT_SIZE_PX
    # A Figure not registered with pyplot: no global state, no GUI backend, Agg canvas.
    figure = Figure(figsize=(width / PLOT_DPI, height / PLOT_DPI), dpi=PLOT_DPI)
    figure.set_layout_engine("constrained")
    ax: Any = figure.add_subplot(projection="3d" if dims == 3 else None)
    xyz = [coords[:, d] for d in range(dims)]
    marker = {"s": 22, "alpha": 0.85, "linewidths": 0.4, "edgecolors": "white"}

    legend: list[str] = []
    point_colors: list[Any] = []
    if _is_numeric(values):
        numbers = np.array([np.nan if v is None else float(v) for v in values])
        cmap = matplotlib.colormaps["viridis"].with_extremes(bad=(0.75, 0.75, 0.75))
        scatter = ax.scatter(*xyz, c=numbers, cmap=cmap, plotnonfinite=True, **marker)
        figure.colorbar(scatter, ax=ax, label=color_by, shrink=0.8)
        point_colors = [scatter.to_rgba(v) for v in numbers]
    else:
        labels, legend = _categories(values)
        palette = matplotlib.colormaps["tab20" if len(legend) > 10 else "tab10"].colors
        color_of = {v: palette[i % len(palette)] for i, v in enumerate(legend)}
        if OTHER in color_of:
            color_of[OTHER] = (0.6, 0.6, 0.6)
        for value in legend:
            mask = np.array([label == value for label in labels])
            count = int(mask.sum())
            ax.scatter(
                *(axis[mask] for axis in xyz),
                color=color_of[value],
                label=f"{_short(value)} ({count})",
                **marker,
            )
        point_colors = [color_of[label] for label in labels]
        # Below the axes, in columns: long labels (folder paths) don't squeeze the plot.
        figure.legend(
            title=color_by,
            loc="outside lower center",
            ncols=min(3, len(legend)),
            fontsize="small",
            title_fontsize="small",
            markerscale=1.5,
            frameon=False,
        )

    for d, setter in enumerate(("set_xlabel", "set_ylabel", "set_zlabel")[:dims]):
        pad = {"labelpad": 12} if dims == 3 else {}  # clear of the 3-D tick labels
        getattr(ax, setter)(f"PC{d + 1} ({ratios[d] * 100:.1f}% of variance)", **pad)
    ax.set_title(
        f"{len(paths)} images, {model_label}, PCA to {dims}-D, coloured by {color_by}",
        fontsize="medium",
    )

    drawn = 0
    if dims == 2 and thumbnails > 0:
        ax.grid(True, alpha=0.25)
        ax.margins(0.08)  # room for the thumbnails of the outermost points
        for index in _spread(coords, thumbnails * 2):
            if drawn >= thumbnails:
                break
            thumb = _thumbnail(paths[index], PLOT_THUMB_PX)
            if thumb is None:
                continue
            # OffsetImage scales by dpi/72: undo that so the thumbnail is PLOT_THUMB_PX pixels.
            image = OffsetImage(np.asarray(thumb), zoom=72 / PLOT_DPI)
            box = AnnotationBbox(
                image,
                (coords[index, 0], coords[index, 1]),
                frameon=True,
                pad=0.15,
                bboxprops={"edgecolor": point_colors[index], "linewidth": 1.5},
            )
            ax.add_artist(box)
            drawn += 1

    atomic_write(out, lambda temp: figure.savefig(temp, format="png", dpi=PLOT_DPI))
    return legend, drawn


def _spread(coords: np.ndarray, count: int) -> list[int]:
    """Up to ``count`` point indices far apart (greedy farthest-point, from the most central)."""
    points = coords[:, :2]
    if len(points) == 0 or count <= 0:
        return []
    first = int(np.argmin(((points - points.mean(axis=0)) ** 2).sum(axis=1)))
    chosen = [first]
    distance = ((points - points[first]) ** 2).sum(axis=1)
    while len(chosen) < min(count, len(points)):
        nxt = int(np.argmax(distance))
        if distance[nxt] <= 0:
            break
        chosen.append(nxt)
        distance = np.minimum(distance, ((points - points[nxt]) ** 2).sum(axis=1))
    return chosen


def _thumbnail(path: str, size: int) -> Image.Image | None:
    """An upright RGB thumbnail fitting ``size`` x ``size``, or None if the file can't be read."""
    try:
        image = decode(read_file(path)).image
        image.thumbnail((size, size), Image.Resampling.LANCZOS)
        return image
    except (ImageError, OSError, ValueError):
        return None


# --- contact sheets ------------------------------------------------------------------------------


def contact_sheet(results: list[QueryResult], out: Path) -> Path:
    """Draw query results as a PNG grid (``.png``) or a self-contained HTML page (``.html``).

    One row (PNG) or table (HTML) per query: the query image, then its hits with rank and score.
    Unreadable images are drawn as a grey placeholder saying so.
    """
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in (".png", ".html", ".htm"):
        raise ImgvecError(f"cannot write a contact sheet as {out.name!r}: use a .png or .html file")
    if not results:
        raise ImgvecError("no query results to show")
    if suffix == ".png":
        sheet = _sheet_png(results)
        atomic_write(out, lambda temp: sheet.save(temp, format="PNG"))
    else:
        page = _sheet_html(results)
        atomic_write(out, lambda temp: temp.write_text(page, encoding="utf-8"))
    return out


def _font(size: int = _LABEL_SIZE) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: a fixed bitmap font
        return ImageFont.load_default()


def _placeholder(size: int, text: str = "unreadable") -> Image.Image:
    image = Image.new("RGB", (size, size), (200, 200, 200))
    draw = ImageDraw.Draw(image)
    font = _font()
    box = draw.textbbox((0, 0), text, font=font)
    draw.text(
        ((size - (box[2] - box[0])) / 2, (size - (box[3] - box[1])) / 2),
        text,
        fill=(90, 90, 90),
        font=font,
    )
    return image


def _fit(draw: ImageDraw.ImageDraw, text: str, font: Any, width: int) -> str:
    """``text``, shortened in the middle with "…" until it fits ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    keep = len(text)
    while keep > 1:
        keep -= 1
        head = keep // 3
        candidate = text[:head] + "…" + text[len(text) - (keep - head) :]
        if draw.textlength(candidate, font=font) <= width:
            return candidate
    return "…"


def _cells(result: QueryResult) -> list[tuple[str, str, str]]:
    """(path, first label line, score text) of each cell of a query's row."""
    cells = [(result.query, "query", result.error or "")]
    cells += [(hit.path, f"#{rank}", f"{hit.score:.4f}") for rank, hit in enumerate(result.hits, 1)]
    return cells


def _sheet_png(results: list[QueryResult]) -> Image.Image:
    columns_ = max(len(r.hits) for r in results) + 1
    sheet = Image.new("RGB", (columns_ * CELL_WIDTH, len(results) * CELL_HEIGHT), "white")
    draw = ImageDraw.Draw(sheet)
    font = _font()
    text_width = CELL_WIDTH - 8
    for row, result in enumerate(results):
        top = row * CELL_HEIGHT
        if row:
            draw.line([(0, top), (sheet.width, top)], fill=(210, 210, 210))
        for column, (path, label, score) in enumerate(_cells(result)):
            left = column * CELL_WIDTH
            thumb = _thumbnail(path, _THUMB_BOX) or _placeholder(_THUMB_BOX)
            x = left + (CELL_WIDTH - thumb.width) // 2
            y = top + 6 + (_THUMB_BOX - thumb.height) // 2
            sheet.paste(thumb, (x, y))
            if column == 0:  # frame the query
                draw.rectangle(
                    [left + 2, top + 2, left + CELL_WIDTH - 3, top + _THUMB_BOX + 9],
                    outline=(30, 90, 200),
                    width=2,
                )
            first = f"{label}  {score}".strip()
            line_y = top + _THUMB_BOX + 14
            draw.text((left + 4, line_y), _fit(draw, first, font, text_width), "black", font)
            name = Path(path).name
            draw.text(
                (left + 4, line_y + _LABEL_SIZE + 5),
                _fit(draw, name, font, text_width),
                (100, 100, 100),
                font,
            )
    return sheet


def _data_uri(path: str) -> str:
    thumb = _thumbnail(path, _HTML_THUMB) or _placeholder(_HTML_THUMB)
    buffer = io.BytesIO()
    thumb.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin-bottom: 2em; }
th, td { border-bottom: 1px solid #ddd; padding: 4px 10px; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.path { font-family: ui-monospace, monospace; font-size: 90%; word-break: break-all; }
img { max-width: 160px; max-height: 160px; display: block; }
tr.query { background: #eef3fc; }
.error { color: #b00; }
"""


def _sheet_html(results: list[QueryResult]) -> str:
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>imgvec query results</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>imgvec query results</h1>",
    ]
    for number, result in enumerate(results, 1):
        parts.append(f"<h2>Query {number}: {esc(result.query)}</h2>")
        if result.error:
            parts.append(f'<p class="error">{esc(result.error)}</p>')
        parts.append("<table><thead><tr><th></th><th>rank</th><th>score</th><th>path</th>")
        parts.append("</tr></thead><tbody>")
        for path, label, score in _cells(result):
            rank = label.lstrip("#")
            row_class = ' class="query"' if label == "query" else ""
            score_text = "" if label == "query" else score
            parts.append(
                f'<tr{row_class}><td><img src="{_data_uri(path)}" alt="{esc(Path(path).name)}">'
                f'</td><td class="num">{esc(rank)}</td><td class="num">{esc(score_text)}</td>'
                f'<td class="path">{esc(path)}</td></tr>'
            )
        parts.append("</tbody></table>")
    parts.append("</body></html>")
    return "\n".join(parts)
