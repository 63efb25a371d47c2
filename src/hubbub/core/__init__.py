"""The hub state and what acts on it, synchronous and free of I/O: connections, groups and
permissions (state), delivery (fanout), commands as data (commands) and applying them (apply)."""
