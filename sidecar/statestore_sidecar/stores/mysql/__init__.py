"""`state.mysql`: state in a MySQL or MariaDB table."""
