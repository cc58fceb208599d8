"""``--config FILE``: the configuration file the app uses, read by ``check``, ``serve`` and
``tokens create`` (see ``token_guard.config``)."""

from __future__ import annotations

import argparse
import os

from token_guard.config import CONFIG_ENV, Settings, load_config


def add_config_flag(p: argparse.ArgumentParser) -> None:
    """Add ``--config FILE`` (default: ``$TOKEN_GUARD_CONFIG``) to ``p``."""
    p.add_argument(
        "--config", metavar="FILE", default=None,
        help=f"the app's TOML configuration (default: ${CONFIG_ENV}); its connections, "
             "routes and options are used, and its store unless --store is given",
    )


def read_config(args: argparse.Namespace) -> Settings | None:
    """The configuration ``--config`` or ``$TOKEN_GUARD_CONFIG`` names, or None; a store
    it names becomes ``args.store`` unless ``--store`` was given."""
    path = args.config or os.environ.get(CONFIG_ENV) or None
    if path is None:
        return None
    settings = load_config(path)
    if getattr(args, "store", None) is None and settings.store is not None:
        args.store = settings.store
    return settings
