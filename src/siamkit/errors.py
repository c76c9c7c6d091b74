"""Errors that more than one layer raises, kept at the bottom so any module may import them."""

from __future__ import annotations

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """A configuration file or override names an unknown key or holds a bad value."""
