"""Retrieval quality with the bundled MiniLM on the committed labelled set."""

from __future__ import annotations

from memory import LocalEmbedder
from tests.memory.retrieval_eval import evaluate, load


def test_labelled_set_is_well_formed() -> None:
    episodes, queries = load()
    assert 40 <= len(episodes) <= 80
    assert 15 <= len(queries) <= 25
    ids = {e.id for e in episodes}
    assert len(ids) == len(episodes)
    assert all(relevant and relevant <= ids for _, relevant in queries)


def test_hybrid_retrieval_quality_floor(minilm: LocalEmbedder) -> None:
    hybrid = evaluate(minilm, "hybrid")
    vector = evaluate(minilm, "vector")
    keyword = evaluate(None, "keyword")
    print(f"\nretrieval quality: hybrid={hybrid} vector={vector} keyword={keyword}")
    # Floors a little under what this set measures (see bench/memory.py): a broken embedder,
    # fusion or normalisation falls far below them.
    assert hybrid["mrr"] >= 0.85
    assert hybrid["recall_at_5"] >= 0.85
    # Paraphrased queries: meaning must beat word overlap.
    assert hybrid["mrr"] > keyword["mrr"]
    assert vector["recall_at_5"] > keyword["recall_at_5"]
