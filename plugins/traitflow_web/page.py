"""The HTML page: the active model's traits rendered on the server, the rest fetched by
``static/app.js`` from the JSON API. It renders without a database too, with the reason."""

from __future__ import annotations

import html
from functools import cache
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends
from fastapi.responses import HTMLResponse

from .auth import require_page_access
from .errors import http_error
from .pool import borrow_store
from .schemas import records

UI_DIR = Path(__file__).resolve().parents[1] / "traitflow_ui"  # index.html and static/

# Served with the page: scripts and styles only from this app, nothing inline, no framing by
# other sites (the Airflow UI frames it from the same origin).
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'self'; base-uri 'none'; form-action 'self'; object-src 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@cache
def _index_template() -> str:
    return (UI_DIR / "index.html").read_text(encoding="utf-8")


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _trait_rows(traits: list[dict[str, Any]]) -> str:
    """Table rows of the traits (escaped HTML), with each trait's share of the profiled customers."""
    total = sum(int(t["size"]) for t in traits)
    rows = []
    for t in traits:
        share = f"{100 * t['size'] / total:.1f}%" if total else "–"
        cells = [
            f'<td class="num">{_esc(t["trait_id"])}</td>',
            f"<td>{_esc(t['label'])}</td>",
            f'<td class="num">{t["size"]:,}</td>',
            f"<td>{share}</td>",
            f'<td class="tags">{_esc(", ".join(t["top_products"]))}</td>',
            f'<td class="tags">{_esc(", ".join(c for c in t["top_categories"] if c))}</td>',
        ]
        rows.append(f'<tr data-trait-id="{_esc(t["trait_id"])}">{"".join(cells)}</tr>')
    return "\n".join(rows)


def _page_content() -> tuple[str, str]:
    """(model summary, traits table rows) as escaped HTML; the page still renders without a DB."""
    try:
        with borrow_store() as store:
            active = store.active_model_version()
            if active is None:
                return "No active model yet: run the traitflow_weekly_retrain DAG.", ""
            models = records(store.model_versions())
            traits = records(store.traits(active))
    except Exception as exc:
        error = http_error(exc)
        if error is None:
            raise
        return f'<span class="error">{_esc(error.detail)}</span>', ""
    model = next(m for m in models if m["model_version"] == active)
    summary = (
        f"Active model {active}, trained through {model['trained_through']:%Y-%m-%d %H:%M}Z, "
        f"{model['n_traits']} traits, {model['n_tokens']:,} tokens."
    )
    return _esc(summary), _trait_rows(traits)


def index(user: Annotated[Any, Depends(require_page_access)]) -> HTMLResponse:  # noqa: ARG001 (the dependency guards the route)
    """The page: traits of the active model rendered here, the rest fetched by static/app.js."""
    summary, rows = _page_content()
    page = _index_template().replace("<!--MODEL_SUMMARY-->", summary).replace("<!--TRAITS_ROWS-->", rows)
    return HTMLResponse(page, headers=PAGE_HEADERS)
