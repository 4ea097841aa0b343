"""`state.redis`: state in a single Redis node."""
