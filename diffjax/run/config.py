"""Reading configs: files, sections as plain dicts, names looked up in tables."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import ml_collections

__all__ = ["load_config", "section", "pick", "to_dict", "from_dict", "Section", "flatten",
           "find_key", "config_changes"]


def load_config(spec: str) -> ml_collections.ConfigDict:
    """``'path/to/config.py[:variant]'`` -> ``get_config(variant)``."""
    path, _, variant = str(spec).partition(":")
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"config file {str(p)!r} does not exist")
    mod_spec = importlib.util.spec_from_file_location(p.stem, p)
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    return mod.get_config(variant or None)


def to_dict(config) -> dict:
    """A config as JSON-able nested dicts (what a workdir's ``run.json`` stores)."""
    return json.loads(json.dumps(config.to_dict() if hasattr(config, "to_dict") else config,
                                 default=str))


def from_dict(d: dict) -> ml_collections.ConfigDict:
    """The inverse of :func:`to_dict` (lists come back as lists; :func:`section` makes them
    tuples)."""
    return ml_collections.ConfigDict(d)


def section(cfg) -> dict:
    """A config section as a plain dict (lists as tuples); ``{}`` for a missing section."""
    if cfg is None:
        return {}
    d = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
    return {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()}


def pick(table: dict, name, what: str):
    """``table[name]``, or a ``ValueError`` naming the config key ``what`` and the choices."""
    if name not in table:
        raise ValueError(f"unknown {what} {name!r}; expected one of {sorted(table)}")
    return table[name]


class Section:
    """A config section read key by key with defaults; :meth:`unread` lists keys no one read."""

    def __init__(self, cfg, name: str):
        self.d, self.name, self.used = section(cfg), name, set()

    def __call__(self, key, default=None):
        self.used.add(key)
        return self.d.get(key, default)

    def pop(self, key, default=None):
        self.used.add(key)
        return self.d.pop(key, default)

    def unread(self) -> list:
        return sorted(set(self.d) - self.used)


def flatten(d, prefix: str = "") -> dict:
    """Nested dicts (or a config) -> ``{"train.num_steps": 20, ...}``, dotted keys in order.

    An empty section appears as its own key with the value ``{}``.
    """
    if hasattr(d, "to_dict"):
        d = d.to_dict()
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def find_key(config, name: str) -> list:
    """The dotted paths of every key called ``name`` in ``config`` (a section's own name
    included), e.g. ``find_key(c, "batch_size") == ["data.batch_size"]``."""
    d = config.to_dict() if hasattr(config, "to_dict") else config
    found = []

    def walk(node, prefix):
        for k, v in node.items():
            path = f"{prefix}{k}"
            if k == name:
                found.append(path)
            if isinstance(v, dict):
                walk(v, path + ".")

    walk(d, "")
    return found


def config_changes(old: dict, new: dict) -> list:
    """``[(key, old_value, new_value), ...]`` for every dotted key that differs between two
    configs (as :func:`to_dict` writes them); a key present in only one side has ``None``
    on the other."""
    a, b = flatten(to_dict(old)), flatten(to_dict(new))
    return [(k, a.get(k), b.get(k)) for k in list(a) + [k for k in b if k not in a]
            if a.get(k) != b.get(k)]
