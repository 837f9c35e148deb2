"""Chat memory: tags stored in SQLite and the relevance score that retrieves them."""
