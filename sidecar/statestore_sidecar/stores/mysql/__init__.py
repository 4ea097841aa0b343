"""`state.mysql`: state in a table of a MySQL-protocol server (tested against MariaDB only)."""
