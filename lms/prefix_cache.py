"""An LRU of prompt-prefix KV caches, so a new batch prefills only what an earlier one has not.

Every call of a DSPy predictor starts with the same system message (and demos). The engine keeps the KV cache of
such token prefixes, keyed by the tokens themselves; a batch whose rows all start with a stored prefix copies its
cache and computes only the rest. Entries are evicted least-recently-used first, past ``max_tokens`` tokens in all.
"""

from __future__ import annotations

import copy
import os
import threading
from collections import OrderedDict
from typing import Any


class PrefixCache:
    """Token-prefix -> KV cache, least recently used evicted first.

    Args:
        max_entries: Most prefixes kept.
        max_tokens: Most prefix tokens kept in all (a bound on memory: tokens x layers x KV width).
    """

    def __init__(self, max_entries: int = 8, max_tokens: int = 8192):
        self.max_entries, self.max_tokens = max_entries, max_tokens
        self._entries: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def longest(self, tokens: list[int]) -> int:
        """Length of the longest common token prefix of ``tokens`` with a stored entry (no copy, no hit counted)."""
        with self._lock:
            return self._best(tokens)[1]

    def _best(self, tokens: list[int]) -> tuple[tuple[int, ...] | None, int]:
        """The stored key sharing the longest token prefix with ``tokens``, and that length (call under the lock)."""
        best_key, best, row = None, 0, tuple(tokens)
        for key in self._entries:
            common = len(os.path.commonprefix([key, row]))
            if common > best:
                best_key, best = key, common
        return best_key, best

    def lookup(self, tokens: list[int], min_tokens: int = 1) -> tuple[int, Any]:
        """The longest common token prefix of ``tokens`` with a stored entry, if at least ``min_tokens`` long.

        Returns:
            ``(length, a private copy of the KV cache cropped to that length)``, or ``(0, None)``.
        """
        with self._lock:
            best_key, best = self._best(tokens)
            cache = None
            if best_key is not None and best >= min_tokens:
                self._entries.move_to_end(best_key)
                cache = copy.deepcopy(self._entries[best_key])
        if cache is not None and best < len(best_key):
            try:
                cache.crop(best - len(best_key))  # a negative count removes that many tokens
            except RuntimeError:  # a sliding-window layer past its window keeps too little to go back
                cache = None
        with self._lock:
            if cache is None:
                self.misses += 1
                return 0, None
            self.hits += 1
        return best, cache

    def store(self, tokens: list[int], cache: Any) -> None:
        """Keep a copy of ``cache``, the KV cache of exactly ``tokens`` (batch size 1)."""
        key = tuple(tokens)
        if not key or len(key) > self.max_tokens:
            return
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return
            for old in [k for k in self._entries if len(k) < len(key) and key[:len(k)] == k]:
                del self._entries[old]  # the new entry covers it
            self._entries[key] = copy.deepcopy(cache)
            while len(self._entries) > self.max_entries or sum(map(len, self._entries)) > self.max_tokens:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
