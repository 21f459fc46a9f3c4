"""Real local components as supervised child processes: Tansu broker, tritonserver, PostgreSQL.

Each starts on free loopback ports, is readiness-checked, and dies with its parent
(``PR_SET_PDEATHSIG`` + own process group), so no orphan survives a failed test or Ctrl-C.
"""

from freshrank.embedded.broker import EmbeddedBroker
from freshrank.embedded.postgres import EmbeddedPostgres
from freshrank.embedded.process import ManagedProcess, Supervisor, free_port
from freshrank.embedded.triton import EmbeddedTriton

__all__ = [
    "EmbeddedBroker",
    "EmbeddedPostgres",
    "EmbeddedTriton",
    "ManagedProcess",
    "Supervisor",
    "free_port",
]
