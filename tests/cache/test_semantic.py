"""The semantic index: real MiniLM for what it must and must not match, a fake embedder for
the bookkeeping (scopes, buckets, LRU bound, removal, threads).

The real-model tests need the extra (`pip install 'llmgw[semantic]'`); without it they fail
with that hint, they are never skipped. Similarities seen with all-MiniLM-L6-v2 (CPU,
torch 2.13.0, sentence-transformers 6.2.0) are noted next to each case.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import threading
import time

import pytest

from llmgw.cache import semantic
from llmgw.cache.semantic import (
    INSTALL_HINT,
    SemanticIndex,
    default_embedder,
    guard_of,
    params_fingerprint,
    semantic_text,
)
from llmgw.config.models import SemanticSettings
from llmgw.errors import ConfigError

THRESHOLD = SemanticSettings().threshold  # the shipped default: 0.92
GROUP = "fast-response"
PROJECT_A = "project:checkout"
PROJECT_B = "project:billing"


def fp(**params) -> str:
    return params_fingerprint([{"role": "user", "content": "x"}], {"max_tokens": 200, **params})


FP = fp(temperature=0)


# --- the real model ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def minilm():
    embedder = default_embedder()  # ConfigError "pip install 'llmgw[semantic]'" if missing
    embedder.load()
    return embedder


@pytest.fixture
def real_index(minilm) -> SemanticIndex:
    return SemanticIndex(minilm, threshold=THRESHOLD, max_entries=100)


def cosine(minilm, a: str, b: str) -> float:
    va, vb = minilm([a, b])
    return sum(x * y for x, y in zip(va, vb, strict=True))


def test_minilm_embeds_offline_as_normalised_384_vectors(minilm):
    [v] = minilm(["How do I reset my password?"])
    assert len(v) == 384
    assert abs(sum(x * x for x in v) - 1) < 1e-5


async def test_paraphrase_hits_above_the_threshold(real_index, minilm):
    await real_index.add(PROJECT_A, GROUP, "How do I reset my password?", FP, "k-reset")
    hit = await real_index.lookup(PROJECT_A, GROUP, "What are the steps to reset my password?", FP)
    assert hit is not None
    key, similarity = hit
    assert key == "k-reset"
    assert THRESHOLD <= similarity < 0.97  # seen: 0.9448
    assert similarity == pytest.approx(
        cosine(minilm, "How do I reset my password?", "What are the steps to reset my password?"),
        abs=1e-4)


async def test_near_miss_is_not_served(real_index, minilm):
    await real_index.add(PROJECT_A, GROUP, "How do I reset my password?", FP, "k-reset")
    assert await real_index.lookup(PROJECT_A, GROUP, "How do I delete my account?", FP) is None
    seen = cosine(minilm, "How do I reset my password?", "How do I delete my account?")
    assert seen < 0.7  # seen: 0.580


async def test_another_scope_never_matches_even_the_same_text(real_index):
    await real_index.add(PROJECT_A, GROUP, "How do I reset my password?", FP, "k-reset")
    assert await real_index.lookup(PROJECT_B, GROUP, "How do I reset my password?", FP) is None
    assert await real_index.lookup(PROJECT_A, GROUP, "How do I reset my password?", FP) is not None


async def test_another_params_fingerprint_never_matches(real_index):
    await real_index.add(PROJECT_A, GROUP, "How do I reset my password?", fp(temperature=0), "k0")
    for other in (fp(temperature=0.7), fp(temperature=0, max_tokens=50)):
        assert await real_index.lookup(PROJECT_A, GROUP, "How can I reset my password?",
                                       other) is None
    hit = await real_index.lookup(PROJECT_A, GROUP, "How can I reset my password?",
                                  fp(temperature=0))
    assert hit is not None and hit[0] == "k0"  # seen: 0.9917


async def test_another_model_group_never_matches(real_index):
    await real_index.add(PROJECT_A, GROUP, "How do I reset my password?", FP, "k-reset")
    assert await real_index.lookup(PROJECT_A, "high-reasoning", "How do I reset my password?",
                                   FP) is None


async def test_negation_guard_stops_a_hit_the_model_alone_would_serve(minilm):
    asked, stored = "Is the API not rate limited?", "Is the API rate limited?"
    assert cosine(minilm, asked, stored) >= THRESHOLD  # seen: 0.9279, above the threshold
    for guards, expected in ((False, "k"), (True, None)):
        index = SemanticIndex(minilm, threshold=THRESHOLD, guards=guards)
        await index.add(PROJECT_A, GROUP, stored, FP, "k")
        hit = await index.lookup(PROJECT_A, GROUP, asked, FP)
        assert (hit[0] if hit else None) == expected


async def test_number_guard(minilm):
    index = SemanticIndex(minilm, threshold=0.9)  # 17x23 ~ 17x24 is 0.9108 with MiniLM
    await index.add(PROJECT_A, GROUP, "What is 17 times 23?", FP, "k23")
    assert await index.lookup(PROJECT_A, GROUP, "What is 17 times 24?", FP) is None
    assert (await index.lookup(PROJECT_A, GROUP, "what is 17 times 23", FP))[0] == "k23"


async def test_concurrent_lookups_share_the_model_safely(real_index):
    await real_index.add(PROJECT_A, GROUP, "How do I reset my password?", FP, "k-reset")
    questions = ["How can I reset my password?", "how do i reset my password",
                 "What are the steps to reset my password?", "How do I reset my password, please?",
                 "Can you tell me how to reset my password?"] * 2
    hits = await asyncio.gather(*(real_index.lookup(PROJECT_A, GROUP, q, FP) for q in questions))
    assert all(h is not None and h[0] == "k-reset" for h in hits)


# --- a fake embedder for the bookkeeping ------------------------------------------------------

DIM = 64


class BagOfWords:
    """Deterministic hashed bag of words: texts with the same words embed identically; texts
    sharing words are similar. Records how often and on which threads it was called."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.calls = 0
        self.threads: set[int] = set()
        self.delay_s = delay_s

    def __call__(self, texts: list[str]) -> list[list[float]]:
        self.calls += 1
        self.threads.add(threading.get_ident())
        if self.delay_s:
            time.sleep(self.delay_s)
        out = []
        for text in texts:
            v = [0.0] * DIM
            for word in re.findall(r"[a-z0-9]+", text.lower()):
                v[int(hashlib.sha256(word.encode()).hexdigest(), 16) % DIM] += 1.0
            out.append(v)
        return out


@pytest.fixture(params=[True, False], ids=["numpy", "pure-python"])
def use_numpy(request) -> bool:
    return request.param


def make(use_numpy: bool, **kw) -> tuple[SemanticIndex, BagOfWords]:
    embed = BagOfWords()
    kw.setdefault("threshold", 0.99)
    return SemanticIndex(embed, use_numpy=use_numpy, **kw), embed


async def test_exact_wording_hits_with_similarity_one(use_numpy):
    index, _ = make(use_numpy)
    assert await index.add(PROJECT_A, GROUP, "alpha beta gamma", FP, "k1")
    key, sim = await index.lookup(PROJECT_A, GROUP, "Gamma, beta alpha!", FP)
    assert key == "k1" and sim == pytest.approx(1.0, abs=1e-6)


async def test_best_of_several_wins(use_numpy):
    index, _ = make(use_numpy, threshold=0.5)
    await index.add(PROJECT_A, GROUP, "alpha beta gamma delta", FP, "k-close")
    await index.add(PROJECT_A, GROUP, "alpha zeta eta theta", FP, "k-far")
    key, sim = await index.lookup(PROJECT_A, GROUP, "alpha beta gamma", FP)
    assert key == "k-close" and 0.5 <= sim < 1


async def test_lru_bound_is_per_scope(use_numpy):
    index, _ = make(use_numpy, max_entries=3)
    for i in range(4):
        await index.add(PROJECT_A, GROUP, f"question {i} word{i}", FP, f"a{i}")
    await index.add(PROJECT_B, GROUP, "question b", FP, "b0")
    assert index.keys(PROJECT_A) == ["a1", "a2", "a3"]
    assert index.keys(PROJECT_B) == ["b0"]
    assert len(index) == 4 and index.evictions == 1
    assert await index.lookup(PROJECT_A, GROUP, "question 0 word0", FP) is None
    assert "a0" not in index


async def test_a_hit_refreshes_the_lru_order(use_numpy):
    index, _ = make(use_numpy, max_entries=3)
    for i in range(3):
        await index.add(PROJECT_A, GROUP, f"question word{i}", FP, f"a{i}")
    assert (await index.lookup(PROJECT_A, GROUP, "question word0", FP))[0] == "a0"
    await index.add(PROJECT_A, GROUP, "question word3", FP, "a3")
    assert index.keys(PROJECT_A) == ["a2", "a0", "a3"]  # a1 was the least recently used


async def test_rows_are_reused_and_grow_without_mixing_vectors(use_numpy):
    index, _ = make(use_numpy, max_entries=30)
    texts = {f"k{i}": f"item{i} thing{i} stuff{i}" for i in range(80)}
    for key, text in texts.items():
        await index.add(PROJECT_A, GROUP, text, FP, key)
    assert index.size(PROJECT_A) == 30
    for key in list(texts)[-30:]:
        hit = await index.lookup(PROJECT_A, GROUP, texts[key], FP)
        assert hit is not None and hit[0] == key and hit[1] == pytest.approx(1.0, abs=1e-6)


async def test_remove_forgets_the_key(use_numpy):
    index, _ = make(use_numpy)
    await index.add(PROJECT_A, GROUP, "alpha beta", FP, "k1")
    await index.add(PROJECT_A, GROUP, "gamma delta", FP, "k2")
    assert index.remove("k1") is True
    assert index.remove("k1") is False
    assert index.remove("never-added") is False
    assert await index.lookup(PROJECT_A, GROUP, "alpha beta", FP) is None
    assert (await index.lookup(PROJECT_A, GROUP, "gamma delta", FP))[0] == "k2"
    assert index.remove("k2") and index.size(PROJECT_A) == 0 and len(index) == 0


async def test_re_adding_a_key_replaces_its_entry(use_numpy):
    index, _ = make(use_numpy)
    await index.add(PROJECT_A, GROUP, "alpha beta", FP, "k1")
    await index.add(PROJECT_A, GROUP, "gamma delta", fp(temperature=0.5), "k1")
    assert len(index) == 1
    assert await index.lookup(PROJECT_A, GROUP, "alpha beta", FP) is None
    assert (await index.lookup(PROJECT_A, GROUP, "gamma delta", fp(temperature=0.5)))[0] == "k1"


async def test_clear_one_scope_or_all(use_numpy):
    index, _ = make(use_numpy)
    await index.add(PROJECT_A, GROUP, "alpha", FP, "a")
    await index.add(PROJECT_A, GROUP, "beta", FP, "a2")
    await index.add(PROJECT_B, GROUP, "alpha", FP, "b")
    assert index.clear(PROJECT_A) == 2
    assert index.clear("project:unknown") == 0
    assert await index.lookup(PROJECT_A, GROUP, "alpha", FP) is None
    assert (await index.lookup(PROJECT_B, GROUP, "alpha", FP))[0] == "b"
    assert index.clear() == 1 and len(index) == 0


async def test_scope_group_fingerprint_isolation_with_identical_text(use_numpy):
    index, _ = make(use_numpy)
    await index.add(PROJECT_A, GROUP, "alpha beta", FP, "k")
    assert await index.lookup(PROJECT_B, GROUP, "alpha beta", FP) is None
    assert await index.lookup(PROJECT_A, "other-group", "alpha beta", FP) is None
    assert await index.lookup(PROJECT_A, GROUP, "alpha beta", fp(temperature=1)) is None
    assert index.misses == 3 and index.hits == 0


async def test_embedding_runs_in_a_worker_thread_and_the_loop_keeps_going():
    embed = BagOfWords(delay_s=0.3)
    index = SemanticIndex(embed)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        await index.add(PROJECT_A, GROUP, "alpha beta", FP, "k")
    finally:
        task.cancel()
    assert threading.get_ident() not in embed.threads
    assert ticks >= 10  # the loop ran while the embedder slept


async def test_a_key_removed_during_a_pure_python_search_is_not_served(monkeypatch):
    index, _ = make(False)
    await index.add(PROJECT_A, GROUP, "alpha beta", FP, "k")
    started = threading.Event()
    real_best = semantic._best_python

    def slow_best(candidates, query):
        started.set()
        time.sleep(0.2)
        return real_best(candidates, query)

    monkeypatch.setattr(semantic, "_best_python", slow_best)
    task = asyncio.create_task(index.lookup(PROJECT_A, GROUP, "alpha beta", FP))
    assert await asyncio.to_thread(started.wait, 30)  # the search is under way
    assert index.remove("k")
    assert await task is None


async def test_no_embedding_when_nothing_could_match_and_none_again_for_add():
    index, embed = make(True)
    assert await index.lookup(PROJECT_A, GROUP, "alpha", FP) is None
    assert embed.calls == 0  # empty scope: no embedding paid for
    await index.add(PROJECT_A, GROUP, "seed", FP, "seed")
    assert embed.calls == 1
    assert await index.lookup(PROJECT_A, GROUP, "alpha beta", FP) is None
    await index.add(PROJECT_A, GROUP, "alpha beta", FP, "k")  # the missed query, then answered
    assert embed.calls == 2


async def test_zero_vector_is_not_added_and_wrong_dimensions_are_an_error():
    index = SemanticIndex(lambda texts: [[0.0, 0.0, 0.0] for _ in texts])
    assert await index.add(PROJECT_A, GROUP, "anything", FP, "k") is False
    assert len(index) == 0
    dims = iter([[1.0, 0.0, 0.0], [1.0, 0.0]])
    index = SemanticIndex(lambda texts: [next(dims)])
    await index.add(PROJECT_A, GROUP, "one", FP, "k1")
    with pytest.raises(ValueError, match="dimensions"):
        await index.add(PROJECT_A, GROUP, "two", FP, "k2")


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError):
        SemanticIndex(BagOfWords(), threshold=0)
    with pytest.raises(ValueError):
        SemanticIndex(BagOfWords(), max_entries=0)


def test_from_settings_takes_threshold_and_bound():
    index = SemanticIndex.from_settings(SemanticSettings(enabled=True, threshold=0.95,
                                                         max_entries=7), embed=BagOfWords())
    assert (index.threshold, index.max_entries) == (0.95, 7)


def test_missing_extra_is_a_config_error_with_the_install_hint(monkeypatch):
    real_find_spec = semantic.find_spec
    monkeypatch.setattr(semantic, "find_spec", lambda name: (
        None if name == semantic.MODEL_PACKAGE else real_find_spec(name)))
    with pytest.raises(ConfigError) as err:
        default_embedder()
    assert INSTALL_HINT in str(err.value) and err.value.key == "llmgw.cache.semantic"
    with pytest.raises(ConfigError, match=re.escape(INSTALL_HINT)):
        SemanticIndex.from_settings(SemanticSettings(enabled=True))


# --- what the gateway matches on --------------------------------------------------------------

def test_semantic_text_is_the_last_user_message_if_plain_text():
    assert semantic_text([{"role": "user", "content": "hi"}]) == "hi"
    assert semantic_text([{"role": "user", "content": [{"type": "text", "text": "a"},
                                                       {"type": "text", "text": "b"}]}]) == "a\nb"
    assert semantic_text([{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:"}}]}]) is None
    assert semantic_text([{"role": "user", "content": "q"},
                          {"role": "assistant", "content": "a"}]) is None
    assert semantic_text([]) is None


def test_fingerprint_covers_context_and_params_not_the_wording():
    def f(messages, **params):
        return params_fingerprint(messages, {"temperature": 0, **params})

    q1 = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "How do I x?"}]
    q2 = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Steps to x?"}]
    other_system = [{"role": "system", "content": "Be thorough."}, q1[1]]
    assert f(q1) == f(q2)
    assert f(q1) != f(other_system)
    assert f(q1) != f(q1, temperature=0.7)
    assert f(q1) == f(q1, metadata={"trace": 1}, timeout=5)  # cannot change the answer


def test_guard_of_numbers_and_negations():
    assert guard_of("What is 17 times 23?") == (("17", "23"), False)
    assert guard_of("Python 2 or 3?") == guard_of("python 3 or 2")
    assert guard_of("I can't log in") == guard_of("I cannot log in") == guard_of(
        "I can\u2019t log in")
    assert guard_of("I can't log in") == ((), True)
    assert guard_of("Is the API not rate limited?") != guard_of("Is the API rate limited?")
    assert guard_of("Costs 1,000 dollars")[0] == ("1000",)
