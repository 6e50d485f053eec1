"""What a simulator carries per model: requests in flight (now and at most) and requests per
wall-clock minute, so tests can show a gateway never exceeds a deployment's limits."""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ModelLoad:
    """One model's load as the simulator saw it."""

    in_flight: int
    max_in_flight: int
    per_minute: dict[int, int]  # minute (unix seconds // 60) -> requests that arrived in it

    @property
    def max_per_minute(self) -> int:
        return max(self.per_minute.values(), default=0)


@dataclass
class LoadMeter:
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _in_flight: Counter[str] = field(default_factory=Counter)
    _max: Counter[str] = field(default_factory=Counter)
    _minutes: dict[str, Counter[int]] = field(default_factory=dict)

    @contextlib.contextmanager
    def track(self, model: str | None) -> Iterator[None]:
        """Count one request from its arrival until its response (a stream's last byte)."""
        name = model or ""
        with self._lock:
            self._in_flight[name] += 1
            self._max[name] = max(self._max[name], self._in_flight[name])
            self._minutes.setdefault(name, Counter())[int(time.time() // 60)] += 1
        try:
            yield
        finally:
            with self._lock:
                self._in_flight[name] -= 1

    def snapshot(self) -> dict[str, ModelLoad]:
        with self._lock:
            return {m: ModelLoad(self._in_flight[m], self._max[m], dict(per))
                    for m, per in self._minutes.items()}

    def reset(self) -> None:
        with self._lock:  # requests still in flight keep their count
            self._max = Counter({m: n for m, n in self._in_flight.items() if n})
            self._minutes = {}
