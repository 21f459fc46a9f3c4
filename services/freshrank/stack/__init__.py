"""The local stack: embedded broker and Triton plus the three services as child processes.

Used by ``freshrank stack up``, ``freshrank demo`` and end-to-end tests. Services run as
``freshrank <role>`` subprocesses configured through ``FRESHRANK_*`` env vars, exactly as
in a container, so this package depends on the CLI contract, not on service internals.
"""

from freshrank.stack.local import LocalStack, StackConfig

__all__ = ["LocalStack", "StackConfig"]
