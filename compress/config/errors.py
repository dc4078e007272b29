"""The one shape of a config error: the key, the bad value, and what is allowed or what to do."""

from __future__ import annotations

from typing import Any

__all__ = ["ConfigError", "invalid"]


class ConfigError(ValueError):
    """A config value that cannot be used; the message names the key, the value and the fix."""


def invalid(key: str, value: Any, allowed: str) -> ConfigError:
    """The error for `key` holding `value`; `allowed` says what is allowed or what to do instead."""
    return ConfigError(f"config key '{key}': got {value!r}; {allowed}")
