"""A self-contained HTML report: headings, sample grids, plots (matplotlib) and metric tables.

Pictures are written beside the HTML as PNG files and referenced relatively, so the folder can be
zipped or served as it is.
"""
from __future__ import annotations

import html
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from imgen.checkpoint import atomic_write_text  # noqa: E402
from imgen.images import save_grid  # noqa: E402


class Report:
    def __init__(self, folder: str | Path, title: str):
        self.folder, self.title, self.parts = Path(folder), title, []
        self.folder.mkdir(parents=True, exist_ok=True)

    def heading(self, text: str):
        self.parts.append(f"<h2>{html.escape(text)}</h2>")

    def text(self, text: str):
        self.parts.append(f"<p>{html.escape(text)}</p>")

    def code(self, text: str):
        self.parts.append(f"<pre>{html.escape(text)}</pre>")

    def image(self, name: str, caption: str = ""):
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        self.parts.append(f'<figure><img src="{html.escape(name)}" alt="{html.escape(caption or name)}">{cap}</figure>')

    def grid(self, x, name: str, caption: str = "", nrow: int | None = None, scale: int = 4):
        save_grid(x, self.folder / name, nrow=nrow, scale=scale)
        self.image(name, caption)

    def figure(self, fig, name: str, caption: str = ""):
        fig.savefig(self.folder / name, dpi=110, bbox_inches="tight")
        plt.close(fig)
        self.image(name, caption)

    def table(self, rows: list[dict], caption: str = ""):
        if not rows:
            return
        cols = list(rows[0])
        fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else html.escape(str(v))  # noqa: E731
        head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
        body = "".join("<tr>" + "".join(f"<td>{fmt(r.get(c, ''))}</td>" for c in cols) + "</tr>" for r in rows)
        cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
        self.parts.append(f"<table>{cap}<tr>{head}</tr>{body}</table>")

    def write(self, name: str = "report.html", data: dict | None = None) -> Path:
        style = ("body{font-family:sans-serif;max-width:960px;margin:2em auto;padding:0 1em}"
                 "img{image-rendering:pixelated;max-width:100%}table{border-collapse:collapse;margin:1em 0}"
                 "td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}figure{margin:1em 0}"
                 "figcaption{color:#555;font-size:90%}pre{background:#f4f4f4;padding:.5em}")
        page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
                f"<style>{style}</style></head><body><h1>{html.escape(self.title)}</h1>{''.join(self.parts)}</body></html>\n")
        path = self.folder / name
        atomic_write_text(path, page)
        if data is not None:
            atomic_write_text(path.with_suffix(".json"), json.dumps(data, indent=2) + "\n")
        return path


def loss_curve(log_path: str | Path):
    """A matplotlib figure of the training loss from a trainer's log.jsonl."""
    recs = [json.loads(line) for line in Path(log_path).read_text().splitlines() if line.strip()]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot([r["step"] for r in recs], [r["loss"] for r in recs], lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    return fig
