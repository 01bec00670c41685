"""Figures and tables written atomically (matplotlib's Agg canvas, no pyplot state)."""
import csv
import io

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from engine.io import atomic_write


def new_figure(width, height):
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path, dpi=150):
    """Render to memory, then replace `path` in one rename. The format follows the extension."""
    buf = io.BytesIO()
    fmt = str(path).rsplit(".", 1)[-1].lower() if "." in str(path) else "png"
    fig.savefig(buf, format=fmt, dpi=dpi, bbox_inches="tight")
    with atomic_write(path, "wb") as f:
        f.write(buf.getvalue())


def write_csv(rows, fieldnames, path):
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fieldnames, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(row.get(k)) for k in fieldnames})
    with atomic_write(path, "w") as f:
        f.write(buf.getvalue())


def _cell(value):
    if isinstance(value, float):
        return repr(value)  # full precision, round-trips through float()
    return "" if value is None else value
