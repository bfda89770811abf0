"""The durable, signed checkpointer: ``WardenSaver`` and its event ledger."""

from .ledger import Ledger, VerificationReport
from .saver import DEFAULT_WORKLOAD_ID, WardenSaver

__all__ = ["WardenSaver", "Ledger", "VerificationReport", "DEFAULT_WORKLOAD_ID"]
