"""The repository's scripts (``configs/``, ``experiments/``) are files, not packages: tests load
them from their paths through :func:`load_script`."""

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_script(relpath):
    """The module at ``ROOT / relpath``, executed once and kept in ``sys.modules`` under its file
    stem (dataclasses look their module up there)."""
    path = (ROOT / relpath).resolve()
    mod = sys.modules.get(path.stem)
    if mod is None or Path(getattr(mod, "__file__", "") or "").resolve() != path:
        spec = importlib.util.spec_from_file_location(path.stem, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = mod
        spec.loader.exec_module(mod)
    return mod
