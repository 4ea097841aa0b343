"""A state API server that speaks Dapr's state HTTP API in front of several backends."""

__version__ = "0.1.0"
