"""langgraph-warden: durable, governed execution for LangGraph agents."""

from .errors import (
    ConfigurationError,
    CorruptRowError,
    DatabaseUnavailableError,
    IntegrityError,
    KeyStoreError,
    LedgerAppendError,
    SchemaVersionError,
    WardenError,
)
from .keys import EphemeralKeyStore, KeyringKeyStore

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "WardenError",
    "ConfigurationError",
    "CorruptRowError",
    "DatabaseUnavailableError",
    "IntegrityError",
    "KeyStoreError",
    "LedgerAppendError",
    "SchemaVersionError",
    "EphemeralKeyStore",
    "KeyringKeyStore",
]
