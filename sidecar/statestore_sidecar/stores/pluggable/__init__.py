"""Dapr pluggable state stores: a store served by another process over gRPC on a Unix socket."""
