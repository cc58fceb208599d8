"""``python -m token_guard.demo``: the same as ``token-guard demo``."""

from token_guard.demo import main

raise SystemExit(main())
