"""Load benchmarks of the service's unary paths, each measured against a bare grpc.aio echo
and a minimal reference GetUser.

``python -m bench`` (see ``bench/README.md``) drives the real service, the echo in
``bench/echo_server.py`` and the reference in ``bench/reference_server.py`` with h2load and
prints one JSON object. Adding a path is one row in ``bench/paths.py``.
"""
