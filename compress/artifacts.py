"""What a run leaves on disk, written safely: every file goes to a temporary file beside it and is renamed into
place, so a reader (or a writer killed half-way) never sees half a file; and the hash that names the config an
artifact was made with.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import to_dict

__all__ = ["atomic_write", "config_hash", "write_json", "write_text"]


def atomic_write(path: Path, write: Callable[[Path], Any]) -> None:
    """Make `path` by calling `write(tmp)` on a temporary file beside it, then renaming it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    write(tmp)
    tmp.replace(path)


def write_json(path: Path, obj: Any) -> None:
    """`obj` as indented JSON (values JSON does not know, such as paths, as text)."""
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=2, default=str)))


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def config_hash(obj: Any) -> str:
    """Short content hash of a config, stable across runs; identifies what produced an artifact."""
    plain = to_dict(obj)
    if isinstance(plain, dict):
        plain.pop("config_path", None)  # where the file lies does not change what it asks for
    blob = json.dumps(plain, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]
