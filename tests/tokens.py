"""Token bodies the tests share: the design's example body and the common small ones.

``BODY`` is the Tokens API body from shared/design.md (with a far expiration date, so it
stays valid); ``body(...)`` varies it. ``FULL`` is the plain body most adapter tests use:
two table grants, no website restriction, maps and sql.
"""

from __future__ import annotations

from typing import Any

CONNECTIONS = {"carto_dw": "bigquery"}

BODY: dict[str, Any] = {
    "name": "storefront map",
    "grants": [
        {"connection_name": "carto_dw", "source": "carto-demo-data.demo_tables.retail_stores"},
        {"connection_name": "carto_dw", "source": "carto-demo-data.shared.*"},
        {
            "connection_name": "carto_dw",
            "source": "SELECT * FROM `carto-demo-data`.demo_tables.stores WHERE city = @city",
        },
    ],
    "referers": ["https://*.example.com", "http://localhost:*"],
    "allowed_apis": ["maps", "sql"],
    "expiration_date": "2099-01-01T00:00:00Z",
}

FULL: dict[str, Any] = {
    "name": "full",
    "grants": [
        {"connection_name": "carto_dw", "source": "proj.ds.stores"},
        {"connection_name": "carto_dw", "source": "proj.shared.*"},
    ],
    "referers": [],
    "allowed_apis": ["maps", "sql"],
}


def body(**changes: Any) -> dict[str, Any]:
    """The design's body with some fields replaced (a field set to ... is removed)."""
    out = {**BODY, **changes}
    return {k: v for k, v in out.items() if v is not ...}
