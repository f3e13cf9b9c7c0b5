"""Tiered image storage (SPEC 2): the S3 object store and the management functions on top
of the catalog: save, schedule (tier moves), retrieve, organise (export).

Modules: ``objects`` (S3 client per tier), ``range_reader`` (ranged GETs for slide_io),
``save``, ``mover`` (crash-safe tier moves), ``scheduler`` (discharge/admission/idle sweep),
``quiet`` (idle detection), ``retrieval``, ``upscale`` (request/await super-resolution),
``export``, ``retry`` (backoff for outages), ``events`` (publishing), ``runtime`` (wiring).
"""
