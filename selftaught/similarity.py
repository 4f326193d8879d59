"""Text similarity, by scikit-learn: the neighbor search of ``pairs.rejected=neighbor`` and the pair checks.

Two measures, each for what it needs:

- ``nearest``: TF-IDF over word unigrams (English stop words removed, sublinear term frequency), fitted on
  the pool, and cosine nearest neighbours of each query in it by ``sklearn.neighbors.NearestNeighbors`` (brute
  force over the sparse vectors, computed in chunks bounded by ``working_memory``): topical closeness across a
  pool, with no queries x pool matrix in memory at any pool size.
- ``text_similarity``: cosine of character 3-5-gram counts (``HashingVectorizer``, nothing fitted), row by
  row: a check of one pair gives the same number in any shard and any run.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import numpy as np

WORKING_MEMORY_MB = 256  # the neighbor search's distance chunks (sklearn's working_memory)


def nearest(queries: Sequence[str], pool: Sequence[str], n_neighbors: int,
            exclude: Optional[Sequence[int]] = None) -> tuple[np.ndarray, np.ndarray]:
    """For each query, its ``n_neighbors`` most similar texts of ``pool``, most similar first: (cosine similarities,
    pool indices), each ``len(queries) x m`` with ``m = min(n_neighbors, len(pool) - 1)``. ``exclude[i]``: the
    pool index of query i itself (never its own neighbor), or -1. A text with no word in the vocabulary (empty,
    stop words alone) is similar to nothing (0). The vectorizer is fitted on the pool."""
    from sklearn import config_context
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.neighbors import NearestNeighbors

    nq, m = len(queries), min(n_neighbors, len(pool) - 1)
    if m < 1 or nq == 0:
        return np.zeros((nq, 0)), np.zeros((nq, 0), dtype=np.int64)
    vec = TfidfVectorizer(sublinear_tf=True, stop_words="english", dtype=np.float32)
    try:
        x = vec.fit_transform(pool)
    except ValueError:  # no word in any text: nothing is similar
        return np.zeros((nq, m)), np.tile(np.arange(m), (nq, 1))
    with config_context(working_memory=WORKING_MEMORY_MB):
        dist, idx = NearestNeighbors(n_neighbors=m + 1, metric="cosine", algorithm="brute").fit(x).kneighbors(
            vec.transform(queries))
    sims = np.clip(1.0 - dist, 0.0, 1.0)
    skip = np.full(nq, -1) if exclude is None else np.asarray(exclude)
    out_s, out_i = np.zeros((nq, m)), np.zeros((nq, m), dtype=np.int64)
    for r in range(nq):
        keep = idx[r] != skip[r]
        if keep.sum() > m:  # the query itself was not among the m + 1: drop the least similar
            keep[np.flatnonzero(keep)[-1]] = False
        out_s[r], out_i[r] = sims[r][keep][:m], idx[r][keep][:m]
    return out_s, out_i


def text_similarity(a: Sequence[str], b: Sequence[str]) -> np.ndarray:
    """Cosine similarity of ``a[i]`` and ``b[i]`` for each i (character 3-5-grams within words, case-folded)."""
    from sklearn.feature_extraction.text import HashingVectorizer

    if len(a) != len(b):
        raise ValueError(f"text_similarity: {len(a)} texts vs {len(b)}")
    if not len(a):
        return np.zeros(0)
    vec = HashingVectorizer(analyzer="char_wb", ngram_range=(3, 5), alternate_sign=False, norm="l2", n_features=2**20)
    xa, xb = vec.transform([t or "" for t in a]), vec.transform([t or "" for t in b])
    return np.asarray(xa.multiply(xb).sum(axis=1)).ravel().clip(0.0, 1.0)
