"""The chat's memory: the SQLite store, its expiry, and the scorers that recall a memory (research/: the rest)."""
