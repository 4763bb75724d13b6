"""Named presets: every method keeps a ``{name: config}`` table whose entries cite their source; this finds one."""

from __future__ import annotations

from typing import Mapping


def lookup_preset(name, presets: Mapping, config_type: type, method: str):
    """``name`` if it already is a ``config_type``, else ``presets[name]``, with an error listing the choices."""
    if isinstance(name, config_type):
        return name
    if name not in presets:
        raise KeyError(f"unknown {method} preset {name!r}; choose one of {', '.join(presets)} "
                       f"or pass a {config_type.__name__}")
    return presets[name]
