"""`state.postgresql`: state in a PostgreSQL table."""
