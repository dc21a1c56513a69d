"""The fingerprint of a run: everything that decides its outputs (the weights' identity, the sampler, the search,
the verifiers, the seed, the data selection), flattened to ``{dotted.key: value}`` so that two fingerprints can
say which settings differ. The run folder (``runs.py``) compares them before a run writes into it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# settings that say how a run computes, not what it computes (batching, sharding, workers): left out of the
# fingerprint, so that a run resumed with another batch size or on more devices is the same run
EXECUTION_ONLY = frozenset(
    {"decode_batch_size", "verifier_batch_size", "micro_batch_size", "predict_batch_size", "num_workers",
     "candidate_sharding"}
)  # fmt: skip
_WHOLE_FILE = 64 << 20  # files up to this size are hashed whole; larger ones by their size, head and tail
_CHUNK = 16 << 20
_MAX_FOLDER_FILES = 2000


def file_identity(path: str | Path) -> str:
    """``sha256:<hex>`` of a file's bytes (for files over 64 MiB: of its size, first and last 16 MiB, which a
    retrained or truncated checkpoint changes), or of a folder's relative file names and their identities."""
    path = Path(path)
    digest = hashlib.sha256()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        for p in files[:_MAX_FOLDER_FILES]:
            digest.update(f"{p.relative_to(path).as_posix()}={file_identity(p)}\n".encode())
        return f"sha256:{digest.hexdigest()}"
    size = path.stat().st_size
    with open(path, "rb") as f:
        if size <= _WHOLE_FILE:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        else:
            digest.update(f"size={size}".encode())
            digest.update(f.read(_CHUNK))
            f.seek(size - _CHUNK)
            digest.update(f.read(_CHUNK))
    return f"sha256:{digest.hexdigest()}"


def _flatten(value: Any, prefix: str, out: dict[str, Any], files: dict[str, str]) -> None:
    if isinstance(value, Mapping):
        for key in sorted(value):
            if key not in EXECUTION_ONLY:
                _flatten(value[key], f"{prefix}.{key}" if prefix else str(key), out, files)
        return
    if isinstance(value, (list, tuple)) and any(isinstance(v, Mapping) for v in value):
        for i, item in enumerate(value):
            _flatten(item, f"{prefix}[{i}]", out, files)
        return
    if isinstance(value, str) and value and len(value) < 4096:
        path = Path(value).expanduser()
        try:
            exists = path.exists()
        except OSError:  # a name too long for the file system: not a path
            exists = False
        if exists:
            files[prefix] = value
            value = file_identity(path)
    out[prefix] = list(value) if isinstance(value, tuple) else value


def fingerprint(settings: Mapping[str, Any], command: str = "predict") -> dict[str, Any]:
    """The fingerprint of a run: its settings flattened to ``{dotted.key: value}`` (execution-only settings
    left out), each value naming an existing file or folder replaced by the identity of its contents (so a
    retrained checkpoint at the same path is another run, a moved one the same run)."""
    flat: dict[str, Any] = {}
    files: dict[str, str] = {}
    _flatten(settings, "", flat, files)
    return {"command": command, "settings": flat, "files": files}


def fingerprint_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What differs between two fingerprints, one ``key: old -> new`` per setting (files shown by path)."""
    a, b = old.get("settings", {}), new.get("settings", {})
    paths = {**old.get("files", {}), **new.get("files", {})}
    out = []
    if old.get("command") != new.get("command"):
        out.append(f"command: {old.get('command')!r} -> {new.get('command')!r}")
    for key in sorted(set(a) | set(b)):
        if a.get(key, "<unset>") != b.get(key, "<unset>"):
            if key in paths and str(a.get(key, "")).startswith("sha256:"):
                out.append(f"{key}: the contents of {paths[key]!r} changed")
            else:
                out.append(f"{key}: {a.get(key, '<unset>')!r} -> {b.get(key, '<unset>')!r}")
    return out
