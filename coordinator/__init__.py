"""The coordinator: leader lease, conduit ownership, assignment, bind batching, health, reconciler, HTTP API."""

from .assignment import plan_assignment
from .service import Coordinator, run_coordinator

__all__ = ["Coordinator", "plan_assignment", "run_coordinator"]
