"""``python -m token_guard.cli``: the same as the ``token-guard`` command."""

import sys

from token_guard.cli import main

sys.exit(main())
