"""The HTTP layer: FastAPI app factory, routes, wire models. Knows nothing about tensors."""

from .app import create_app

__all__ = ["create_app"]
