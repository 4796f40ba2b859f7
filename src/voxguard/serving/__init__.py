"""Serving: what admits, batches and scores requests, in one process or across several."""
