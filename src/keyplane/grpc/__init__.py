"""Keyplane's gRPC API: the key lifecycle and verify (``keyplane.v1``), and Envoy's external
authorization (``envoy.service.auth.v3.Authorization``). See docs/grpc.md.

An adapter like ``api/``: it parses, calls the same services, and maps the result; errors meet
gRPC status codes in :mod:`keyplane.grpc.status` only.
"""
