"""`state.in-memory`: state in this process's memory, lost on restart."""
