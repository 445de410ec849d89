"""HTML and Markdown rendering. The HTML page is self-contained: CSS inline, figures as base64
PNG data URLs, no scripts and no external URLs, so it opens offline and can be archived."""

from __future__ import annotations

import base64
import html
import math

import pandas as pd

from robustart.console import escape_md

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 2px solid #ddd; padding-bottom: 0.2em; margin-top: 2em; }
h3 { margin-top: 1.4em; }
.meta { color: #555; font-size: 0.92em; }
table.tbl { border-collapse: collapse; font-size: 0.82em; margin: 0.6em 0 1em; display: block; overflow-x: auto; }
table.tbl th, table.tbl td { border: 1px solid #ddd; padding: 3px 7px; text-align: right; white-space: nowrap; }
table.tbl th { background: #f3f3f3; }
table.tbl td:first-child, table.tbl th:first-child { text-align: left; }
table.tbl tr:nth-child(even) td { background: #fafafa; }
img.fig { max-width: 100%; height: auto; border: 1px solid #eee; margin: 0.5em 0; }
.empty { background: #fff8e1; border-left: 4px solid #f0b400; padding: 0.5em 1em; }
.note { color: #555; font-size: 0.9em; }
code { background: #f3f3f3; padding: 0 3px; }
nav ul { columns: 2; }
"""


def fmt_value(v) -> str:
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v)


def _display(df: pd.DataFrame) -> pd.DataFrame:
    """Values as shown: percentages to two decimals, eps in 1/255 units where that is how it is
    given, missing values as a dash."""
    d = df.copy()
    if "eps" in d.columns and "norm" in d.columns:
        d["eps"] = [fmt_value(e) if n != "linf" or e is None or pd.isna(e) else f"{float(e) * 255:.3g}/255"
                    for e, n in zip(d["eps"], d["norm"])]
    for c in d.columns:
        d[c] = [fmt_value(v) for v in d[c]]
    for c in ("key", "keys"):  # a long list of job keys: the CSV and the provenance table have them all
        if c in d.columns:
            d[c] = [_short_keys(v) for v in d[c]]
    return d


def _short_keys(v: str) -> str:
    keys = str(v).split()
    return v if len(keys) <= 3 else f"{' '.join(keys[:2])} … (+{len(keys) - 2} jobs)"


def html_table(df: pd.DataFrame) -> str:
    return _display(df).to_html(index=False, classes="tbl", border=0, escape=True)


def md_table(df: pd.DataFrame) -> str:
    d = _display(df)
    esc = [escape_md(c) for c in d.columns]
    lines = ["| " + " | ".join(esc) + " |", "|" + "---|" * len(esc)]
    for row in d.itertuples(index=False):
        lines.append("| " + " | ".join(escape_md(v) for v in row) + " |")
    return "\n".join(lines)


def img_tag(png: bytes, alt: str) -> str:
    b64 = base64.b64encode(png).decode("ascii")
    # drawn at 150 dpi: shown at 100 px per inch, so text in figures matches the page's
    w, h = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    size = f' width="{round(w / 1.5)}" height="{round(h / 1.5)}"' if png[12:16] == b"IHDR" else ""
    return f'<img class="fig" alt="{html.escape(alt)}"{size} src="data:image/png;base64,{b64}">'


MAX_HTML_ROWS = 2000  # per table in the page, so a big store's page still opens quickly


class Section:
    """One section of the report: a title, what it shows, then figures and tables, or a note
    that says what run would fill it."""

    def __init__(self, id: str, title: str, intro: str = "", empty: str | None = None):
        self.id, self.title, self.intro, self.empty = id, title, intro, empty
        self.parts: list[tuple[str, object, str]] = []  # (kind, payload, caption)

    def figure(self, png: bytes | None, caption: str) -> None:
        if png:
            self.parts.append(("figure", png, caption))

    def table(self, df: pd.DataFrame, caption: str, *, md: bool = True, folded: bool = False) -> None:
        if df is not None and len(df):
            # a long table (the provenance of a big store) folds, so the leaderboards stay in view
            self.parts.append(("table", (df, md, folded or len(df) > 100), caption))

    def note(self, text: str) -> None:
        self.parts.append(("note", text, ""))

    @property
    def has_content(self) -> bool:
        return any(k != "note" for k, _, _ in self.parts)

    def to_html(self) -> str:
        out = [f'<section id="{self.id}"><h2>{html.escape(self.title)}</h2>']
        if self.intro:
            out.append(f"<p>{self.intro}</p>")
        if not self.has_content:
            out.append(f'<p class="empty">No results. {self.empty or ""}</p>')
        for kind, payload, caption in self.parts:
            if kind == "figure":
                out.append(f"<figure>{img_tag(payload, caption)}<figcaption class='note'>{html.escape(caption)}</figcaption></figure>")
            elif kind == "table":
                df, _, folded = payload
                shown = df.head(MAX_HTML_ROWS)
                more = (f'<p class="note">First {MAX_HTML_ROWS} of {len(df)} rows; every row is in tables/ '
                        "beside this page (CSV and Parquet).</p>") if len(df) > MAX_HTML_ROWS else ""
                body = f"<h3>{html.escape(caption)}</h3>{html_table(shown)}{more}"
                out.append(f"<details><summary>{html.escape(caption)} ({len(df)} rows)</summary>{html_table(shown)}{more}"
                           "</details>" if folded else body)
            else:
                out.append(f'<p class="note">{payload}</p>')
        out.append("</section>")
        return "\n".join(out)

    def to_markdown(self, figure_files: dict) -> str:
        out = [f"## {escape_md(self.title)}", ""]
        if not self.has_content:
            out += [f"No results. {_strip_tags(self.empty or '')}", ""]
        for kind, payload, caption in self.parts:
            if kind == "figure" and caption in figure_files:
                out += [f"![{escape_md(caption)}]({figure_files[caption]})", ""]
            elif kind == "table" and payload[1]:
                out += [f"**{escape_md(caption)}**", "", md_table(payload[0]), ""]
            elif kind == "note":
                out += [_strip_tags(payload), ""]
        return "\n".join(out)


def _strip_tags(text: str) -> str:
    """An HTML note as Markdown: tags dropped, <code> as backticks; entities stay escaped (a
    Markdown reader shows them as characters), so an escaped name never turns back into HTML."""
    import re

    return re.sub(r"<code>(.*?)</code>", r"`\1`", re.sub(r"<(?!/?code)[^>]+>", "", text))


def page(title: str, header_html: str, sections: list[Section]) -> str:
    toc = "".join(f'<li><a href="#{s.id}">{html.escape(s.title)}</a>{"" if s.has_content else " (no results)"}</li>'
                  for s in sections)
    body = "\n".join(s.to_html() for s in sections)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{html.escape(title)}</title><link rel=\"icon\" href=\"data:,\"><style>{CSS}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>{header_html}<nav><h2>Contents</h2><ul>{toc}</ul></nav>{body}"
        "</body></html>\n"
    )
