"""The audit's journal: one small JSON file per finished unit of work, written atomically as it completes.

A unit is identified by a key such as ``m0/aa/e1/b3/apgd-t`` (model 0, AutoAttack at the 2nd ε, batch 3, after
APGD-T). Each file is written to a temporary name, flushed and fsync'ed, then renamed into place with
``os.replace`` (and the folder fsync'ed), so a process killed at any instant leaves either the whole record or
none: a resumed run redoes at most the unit that was running. ``settings.json`` holds what the journal was
made for; a run with other settings refuses to continue it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from robustlens.errors import UserError


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path``: temporary file, fsync, ``os.replace``, fsync of the folder."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class Journal:
    """Finished units under ``folder`` (created by :meth:`open`); ``written`` counts units this process wrote,
    ``reused`` units it found done."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.written = 0
        self.reused = 0

    @classmethod
    def open(cls, folder: Path, settings: dict, *, must_exist: bool = False) -> "Journal":
        """The journal in ``folder`` for ``settings`` (JSON-ready): a new one, or the one a run with the same
        settings left there. Other settings, or ``must_exist`` without a journal, are a UserError."""
        marker = folder / "settings.json"
        if marker.is_file():
            found = json.loads(marker.read_text(encoding="utf-8"))
            if found != json.loads(json.dumps(settings)):
                changed = sorted(k for k in set(found) | set(settings) if found.get(k) != settings.get(k))
                raise UserError(f"{folder} holds the journal of an audit with other settings ({', '.join(changed)}); "
                                "give a new --out, or the same options to resume it")
        elif must_exist:
            raise UserError(f"--resume: no audit journal in {folder}")
        else:
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write(marker, json.dumps(settings, indent=1))
        return cls(folder)

    def _path(self, key: str) -> Path:
        return self.folder / (key.replace("/", "__") + ".json")

    def read(self, key: str) -> dict | None:
        """The record of ``key`` if that unit is done, else None."""
        p = self._path(key)
        return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else None

    def get(self, key: str) -> dict | None:
        """:meth:`read`, counting a found record as reused."""
        record = self.read(key)
        self.reused += record is not None
        return record

    def put(self, key: str, record: dict) -> dict:
        atomic_write(self._path(key), json.dumps(record))
        self.written += 1
        return record

    def keys(self) -> list[str]:
        return sorted(p.stem.replace("__", "/") for p in self.folder.glob("*.json") if p.name != "settings.json")
