"""HTTP serving of one loaded :class:`~dynamics.service.DynamicsService` (``mbrl dynamics serve``).

- :mod:`.config`   the server's settings and who may bind where (standard library only)
- :mod:`.wire`     tensors to JSON and back, shared with :mod:`dynamics.client` (no web framework)
- :mod:`.schemas`  the request and response models, and pydantic's refusals as one-line messages
- :mod:`.batching` the worker that owns the model and joins concurrent requests into one forward pass
- :mod:`.app`      the FastAPI application: routes, bearer token, errors as ``{"error": ...}``
- :mod:`.server`   uvicorn on a socket bound here, started and stopped from a thread

:mod:`.schemas`, :mod:`.app` and :mod:`.server` need the ``serve`` extra
(``pip install "mbrl-offline-suite[serve]"``); the rest of the project never imports them.
"""
