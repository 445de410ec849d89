"""The one place robustart prints user-facing text, and the escapes user strings get elsewhere.

The consoles here read neither Rich markup nor emoji codes: a path, a model or dataset name, a
noise spec (`corruption:fog:3`) or an error message is printed as given. Styling is applied to
the parts robustart writes itself, as `rich.text.Text` spans. Figures escape matplotlib's
mathtext (reports/figures.py turns mathtext off), Markdown escapes HTML, pages escape everything (`escape_html`).

Errors a user can cause end in one `error:` line and exit code 2 (`fail`); `--debug` or
`ROBUSTART_DEBUG=1` shows the traceback instead. Tables fit the terminal (`emit_table`): key
columns never wrap, narrow terminals drop the least useful columns, and `--format tsv|json` (TSV
by default when stdout is not a terminal) gives every column for scripts.
"""

from __future__ import annotations

import html
import json
import math
import os
import sys

from rich.console import Console
from rich.table import Table
from rich.text import Text

out = Console(markup=False, emoji=False, highlight=False)
err = Console(stderr=True, markup=False, emoji=False, highlight=False)

DEBUG_ENV = "ROBUSTART_DEBUG"
FORMATS = ("table", "tsv", "json")
_debug = False


# --------------------------------------------------------------------------- messages


def set_debug(on: bool) -> None:
    global _debug
    _debug = bool(on)


def debug() -> bool:
    """Show tracebacks of user errors (`--debug`, or ROBUSTART_DEBUG=1)."""
    return _debug or os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


def one_line(message: object) -> str:
    return " ".join(str(message).split("\n")).strip()


def line(label: str, style: str, message: object, *, console: Console | None = None) -> None:
    """`label message` on one line, the label styled, the message as plain text."""
    (console or err).print(Text.assemble((label, style), " ", one_line(message)), soft_wrap=True)


def error(message: object) -> None:
    line("error:", "bold red", message)


def warning(message: object) -> None:
    line("warning:", "yellow", message)


def fail(e: object, code: int = 2):
    """Print `error: <e>` and exit with `code` (2: the user's input is at fault)."""
    import typer

    error(e)
    raise typer.Exit(code)


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions whose message is for the user (they name the input and what to do)."""
    from robustart.errors import RobustartError

    return (RobustartError,)


def print_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str, allow_nan=True) + "\n")


# --------------------------------------------------------------------------- escapes


def escape_html(value: object) -> str:
    """Text for an HTML page: every special character escaped, quotes included."""
    return html.escape(str(value), quote=True)


def escape_md(value: object) -> str:
    """Text for Markdown (and a Markdown table cell): HTML escaped, so a name cannot inject tags
    or attributes; `|`, backticks and newlines cannot break the table."""
    text = html.escape(" ".join(str(value).splitlines()), quote=True)
    return text.replace("|", "\\|").replace("`", "&#96;")


def escape_mathtext(value: object) -> str:
    """Text for a matplotlib label drawn with mathtext on (the report's figures turn it off,
    `text.parse_math`): `$` would start mathtext, and the parser fails on many names."""
    return str(value).replace("$", r"\$")


# --------------------------------------------------------------------------- tables


def output_format(fmt: str | None, as_json: bool = False) -> str:
    """The format a list/show command prints: --json, else --format, else a table on a terminal
    and TSV when stdout is piped."""
    from robustart.errors import RobustartError

    if as_json:
        return "json"
    if fmt is None:
        return "table" if out.is_terminal else "tsv"
    fmt = fmt.strip().lower()
    if fmt not in FORMATS:
        raise RobustartError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}.")
    return fmt


def cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.2f}"
    return str(value)


def _tsv(value: object) -> str:
    return " ".join(cell(value).replace("\t", " ").splitlines())


def emit_table(columns: list[str], rows: list[list], *, fmt: str, title: str | None = None,
               caption: str | None = None, keep: tuple[str, ...] = (), drop_order: tuple[str, ...] = (),
               right: tuple[str, ...] = (), records: list[dict] | None = None) -> None:
    """Print rows as a table that fits the terminal, as TSV (header line first) or as JSON
    (`records`, or one object per row).

    `keep`: columns that never wrap (names, keys). `drop_order`: columns left out, first ones
    first, while the table is wider than the terminal; other columns may wrap."""
    if fmt == "json":
        print_json(records if records is not None else [dict(zip(columns, r)) for r in rows])
        return
    if fmt == "tsv":
        sys.stdout.write("\t".join(columns) + "\n")
        for r in rows:
            sys.stdout.write("\t".join(_tsv(v) for v in r) + "\n")
        return
    width = out.width
    shown = list(columns)

    def needed(cols: list[str]) -> int:
        """Width of the table: key and number columns whole, text columns folded to 14 wide."""
        ws = [max([len(c)] + [len(cell(r[columns.index(c)])) for r in rows]) for c in cols]
        return sum(w if c in keep or c in right else min(w, 14) for c, w in zip(cols, ws)) + 3 * len(cols) + 1

    for c in drop_order:
        if needed(shown) <= width:
            break
        if c in shown and len(shown) > len(keep) + 1:
            shown.remove(c)
    t = Table(title=Text(title) if title else None, title_justify="left",
              caption=Text(caption) if caption else None, caption_justify="left")
    for c in shown:
        if c in keep:
            w = max([len(c)] + [len(cell(r[columns.index(c)])) for r in rows])
            t.add_column(c, no_wrap=True, min_width=w, justify="right" if c in right else "left")
        elif c in right:
            t.add_column(c, no_wrap=True, justify="right")
        else:
            t.add_column(c, overflow="fold")
    idx = [columns.index(c) for c in shown]
    for r in rows:
        t.add_row(*[Text(cell(r[i])) for i in idx])
    out.print(t)
    dropped = [c for c in columns if c not in shown]
    if dropped:
        line("note:", "dim", f"columns {', '.join(dropped)} left out to fit {width} columns; "
             "--format tsv or json gives all.", console=err)
