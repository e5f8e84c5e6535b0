"""Persistent request cache: an answer that was paid for once is never paid for again.

Keyed by everything that determines the answer (model as served, messages, sampling parameters,
output schema, template version). Each answer is committed as soon as it arrives, so a crash
loses at most the requests that were in flight.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path


def request_key(**parts) -> str:
    canonical = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class RequestCache:
    """The answers paid for, in one SQLite file. The file is made when the first answer is stored
    (or read where it exists), so a run that paid nothing leaves none behind."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    def _connection(self, create: bool) -> sqlite3.Connection | None:
        """The open file; None while there is none and `create` is false. Called under the lock."""
        if self._db is None and (create or self.path.exists()):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, stage TEXT, model TEXT,"
                " request TEXT, answer TEXT, created REAL)"
            )
        return self._db

    def get(self, key: str) -> dict | None:
        with self._lock:
            db = self._connection(create=False)
            row = db.execute("SELECT answer FROM answers WHERE key = ?", (key,)).fetchone() if db else None
        return json.loads(row[0]) if row else None

    def put(self, key: str, stage: str, model: str, request: dict, answer: dict) -> None:
        with self._lock:
            self._connection(create=True).execute(
                "INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?, ?, ?)",
                (key, stage, model, json.dumps(request, ensure_ascii=False),
                 json.dumps(answer, ensure_ascii=False), time.time()),
            )

    def __len__(self) -> int:
        with self._lock:
            db = self._connection(create=False)
            return db.execute("SELECT COUNT(*) FROM answers").fetchone()[0] if db else 0

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
