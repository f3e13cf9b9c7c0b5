"""Compute service: priority super-resolution of HR tiles (SPEC 3).

Pure domain code (``plan``, ``scheduler``, ``windows``, ``leases``) is importable and
testable without servers; ``engine`` runs requests against storage, leases and a model;
``agents/upscale.py`` connects it to Kafka.
"""
