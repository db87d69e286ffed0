//! Block cache: memory LRU over a persistent disk cache.
