"""hubbub: a self-hosted real-time messaging service that speaks the Azure Web PubSub protocols."""

__version__ = "0.1.0"
