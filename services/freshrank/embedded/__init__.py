"""Real local components as supervised child processes: the Tansu broker and tritonserver.

Each starts on free loopback ports, is readiness-checked, and dies with its parent
(``PR_SET_PDEATHSIG`` + own process group), so no orphan survives a failed test or Ctrl-C.
"""

from freshrank.embedded.broker import EmbeddedBroker
from freshrank.embedded.process import ManagedProcess, free_port
from freshrank.embedded.triton import EmbeddedTriton

__all__ = ["EmbeddedBroker", "EmbeddedTriton", "ManagedProcess", "free_port"]
