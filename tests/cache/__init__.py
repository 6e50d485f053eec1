"""Cache backends and the cache key."""
