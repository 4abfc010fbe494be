"""The activity monitor's own SQLite file (``<state_dir>/activity.sqlite``).

Only the hub process writes it, and only through one worker thread
(:class:`hub_ext.activity.service.ActivityMonitor` owns the executor), so
there is a single writer and no "database is locked" (the original's second
process writing the same file risked exactly that). WAL journal, so reads
never wait for the writer.

Tables:

* ``samples``: one row per user per sampling tick (user, time, active, online,
  CPU %, memory, GPU memory); index (user, t) for the per-user history.
* ``totals``: one row per tick, the platform sums (the platform history
  without scanning the samples).
* ``scores``: the two running decay sums per user (:mod:`.score`), written in
  the same transaction as the samples they include, so a hub restart resumes
  them in O(users); ``meta.half_life_hours`` records the half life they were
  made with (another one rebuilds them from the samples once).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from hub_ext.activity.score import DecayScore

SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (
    user TEXT NOT NULL,
    t REAL NOT NULL,
    active INTEGER NOT NULL,
    online INTEGER NOT NULL,
    cpu_percent REAL,
    memory_bytes INTEGER,
    gpu_memory_bytes INTEGER
);
CREATE INDEX IF NOT EXISTS samples_user_t ON samples (user, t);
CREATE INDEX IF NOT EXISTS samples_t ON samples (t);
CREATE TABLE IF NOT EXISTS totals (
    t REAL PRIMARY KEY,
    online INTEGER NOT NULL,
    active INTEGER NOT NULL,
    cpu_percent REAL NOT NULL,
    memory_bytes INTEGER NOT NULL,
    gpu_memory_bytes INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS scores (
    user TEXT PRIMARY KEY,
    active REAL NOT NULL,
    total REAL NOT NULL,
    at REAL NOT NULL,
    samples INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True)
class Sample:
    user: str
    t: float
    active: bool
    online: bool
    cpu_percent: float | None = None
    memory_bytes: int | None = None
    gpu_memory_bytes: int | None = None


@dataclass(frozen=True)
class Total:
    t: float
    online: int
    active: int
    cpu_percent: float
    memory_bytes: int
    gpu_memory_bytes: int


class Store:
    """One connection, used from one thread at a time (the monitor's worker)."""

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        self._db: sqlite3.Connection | None = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            if self.path != ":memory:":
                # the file holds user names and usage: root only, like the hub's database
                fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
                os.close(fd)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(SCHEMA)
            self._db = db
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    # --- scores ---

    def load_scores(self, half_life_hours: float, rate: float) -> dict[str, DecayScore]:
        """The persisted sums; rebuilt from the samples when made with another half life."""
        db = self.db
        row = db.execute("SELECT value FROM meta WHERE key = 'half_life_hours'").fetchone()
        if row is not None and float(row[0]) == float(half_life_hours):
            return {
                user: DecayScore(active, total, at, samples)
                for user, active, total, at, samples in db.execute(
                    "SELECT user, active, total, at, samples FROM scores"
                )
            }
        return self.rebuild_scores(half_life_hours, rate)

    def rebuild_scores(self, half_life_hours: float, rate: float) -> dict[str, DecayScore]:
        """Recompute every user's sums from the samples (one full scan) and persist them."""
        scores: dict[str, DecayScore] = {}
        for user, t, active in self.db.execute(
            "SELECT user, t, active FROM samples ORDER BY user, t"
        ):
            scores.setdefault(user, DecayScore()).add(t, bool(active), rate)
        with self.transaction() as db:
            db.execute("DELETE FROM scores")
            self._save_scores(db, scores)
            db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('half_life_hours', ?)",
                (str(float(half_life_hours)),),
            )
        return scores

    @staticmethod
    def _save_scores(db, scores: Mapping[str, DecayScore]) -> None:
        db.executemany(
            "INSERT OR REPLACE INTO scores (user, active, total, at, samples) VALUES (?, ?, ?, ?, ?)",
            [(u, s.active, s.total, s.at, s.samples) for u, s in scores.items()],
        )

    # --- one tick ---

    def transaction(self):
        db = self.db

        class _Tx:
            def __enter__(self_inner):
                db.execute("BEGIN IMMEDIATE")
                return db

            def __exit__(self_inner, exc_type, exc, tb):
                db.execute("ROLLBACK" if exc_type else "COMMIT")
                return False

        return _Tx()

    def write_tick(
        self,
        samples: Iterable[Sample],
        total: Total | None,
        cutoff: float,
        scores: dict[str, DecayScore],
        rate: float,
    ) -> int:
        """Insert a tick's samples and total, prune everything older than ``cutoff``,
        update ``scores`` in place (added and pruned samples) and persist the
        changed sums, all in one transaction. Returns the number of samples pruned."""
        samples = list(samples)
        changed: dict[str, DecayScore] = {}
        with self.transaction() as db:
            db.executemany(
                "INSERT INTO samples (user, t, active, online, cpu_percent, memory_bytes,"
                " gpu_memory_bytes) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (s.user, s.t, int(s.active), int(s.online), s.cpu_percent,
                     s.memory_bytes, s.gpu_memory_bytes)
                    for s in samples
                ],
            )
            if total is not None:
                db.execute(
                    "INSERT OR REPLACE INTO totals (t, online, active, cpu_percent, memory_bytes,"
                    " gpu_memory_bytes) VALUES (?, ?, ?, ?, ?, ?)",
                    (total.t, total.online, total.active, total.cpu_percent,
                     total.memory_bytes, total.gpu_memory_bytes),
                )
            for s in samples:
                score = scores.setdefault(s.user, DecayScore())
                score.add(s.t, s.active, rate)
                changed[s.user] = score
            pruned = db.execute(
                "SELECT user, t, active FROM samples WHERE t < ?", (cutoff,)
            ).fetchall()
            for user, t, active in pruned:
                score = scores.get(user)
                if score is not None:
                    score.remove(t, bool(active), rate)
                    changed[user] = score
            if pruned:
                db.execute("DELETE FROM samples WHERE t < ?", (cutoff,))
            db.execute("DELETE FROM totals WHERE t < ?", (cutoff,))
            gone = [u for u, s in changed.items() if s.samples == 0]
            for user in gone:
                scores.pop(user, None)
                changed.pop(user)
            db.executemany("DELETE FROM scores WHERE user = ?", [(u,) for u in gone])
            self._save_scores(db, changed)
        return len(pruned)

    def reset(self) -> int:
        """Delete every sample, total and score; returns the number of samples deleted."""
        with self.transaction() as db:
            count = db.execute("SELECT COUNT(*) FROM samples").fetchone()[0]
            db.execute("DELETE FROM samples")
            db.execute("DELETE FROM totals")
            db.execute("DELETE FROM scores")
        return count

    # --- history ---

    def user_history(self, user: str, since: float) -> list[tuple]:
        """(t, active, online, cpu_percent, memory_bytes, gpu_memory_bytes) of one user, by time."""
        return self.db.execute(
            "SELECT t, active, online, cpu_percent, memory_bytes, gpu_memory_bytes"
            " FROM samples WHERE user = ? AND t >= ? ORDER BY t",
            (user, since),
        ).fetchall()

    def totals_history(self, since: float) -> list[tuple]:
        """(t, online, active, cpu_percent, memory_bytes, gpu_memory_bytes) per tick, by time."""
        return self.db.execute(
            "SELECT t, online, active, cpu_percent, memory_bytes, gpu_memory_bytes"
            " FROM totals WHERE t >= ? ORDER BY t",
            (since,),
        ).fetchall()

    def samples_of(self, user: str, since: float) -> list[tuple[float, bool]]:
        """(t, active) of one user: what the full formula reads."""
        return [
            (t, bool(a))
            for t, a in self.db.execute(
                "SELECT t, active FROM samples WHERE user = ? AND t >= ?", (user, since)
            )
        ]

    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM samples").fetchone()[0]
