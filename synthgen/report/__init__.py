"""`synthgen report`: one self-contained HTML file with plots of everything in a store.

    data    what is shown, read with SQL (works during a run, through the live-read path)
    plots   matplotlib figures as inline SVG (the `report` extra)
    page    the HTML around them (escaped, no script, nothing fetched)

It reads the store only; it knows nothing of the engine, the backends or the student.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from ..hints import pip_install

__all__ = ["build"]


def require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ConfigError("synthgen report draws its plots with matplotlib: "
                          f"{pip_install('report')}") from None


def build(db: str | Path, out: str | Path) -> Path:
    """Write the report of store `db` to `out` (HTML) and return its path."""
    require_matplotlib()
    from .. import store
    from . import data, page

    con = store.connect(db, read_only=True, sandbox=True)
    try:
        live_run = con.info.get("run_id") if isinstance(con, store.LiveConnection) else None
        content = data.load(con, str(db), live_run)
    finally:
        con.close()
    import matplotlib

    # Labels are data (model names, sources, prices with "$"): never TeX-like math.
    with matplotlib.rc_context({"text.parse_math": False}):
        html = page.render(content)
    out = Path(out)
    out.write_text(html, encoding="utf-8")
    return out
