"""`state.sqlite`: state in an SQLite database file (or in memory); the embedded default store."""
