"""Generated protobuf and gRPC modules, importable as ``raftlog``.

The ``.proto`` sources sit at the path of their proto package
(``raftlog/v1/errors.proto`` is ``package raftlog.v1``) and ``make proto``
writes the generated ``*_pb2.py``, ``*_pb2.pyi`` and ``*_pb2_grpc.py`` right
beside them. Generated files are not committed. These ``__init__.py`` files
are hand-written and committed so that ``raftlog`` is a regular package (not a
namespace package) for Python, setuptools and mypy alike.

- ``raftlog.v1``: the public client API.
- ``raftlog.internal.v1``: node-to-node messages, never exposed to clients.
"""
