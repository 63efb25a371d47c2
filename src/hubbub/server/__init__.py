"""Thin transport adapters: the upgraded-socket layer and the Web PubSub endpoint over it, the
REST API (one rulebook, read by aiohttp and by the fast lane), and the server assembled in
:mod:`hubbub.server.app`."""
