"""Thin transport adapters: the WebSocket endpoint, the REST API, the application."""
