"""Core domain logic shared by the server: connections, groups, permissions."""
