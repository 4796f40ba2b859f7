"""The HTTP layer: FastAPI app factory (``api.app.create_app``), routes, wire models. No tensors here.

Kept empty on purpose: importing ``voxguard.api.protocol`` (as the client does) must not load the
server, torch included.
"""
