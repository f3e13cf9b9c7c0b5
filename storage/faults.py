"""Crash injection for the tier-move crash-safety tests.

``settings.tiering.fault_at`` (``SLIDESTREAM_TIERING__FAULT_AT``) names a step of a tier
move; when a move reaches it the whole process exits at once with ``os._exit`` (no cleanup,
no offset commit), as a SIGKILL would. Unset in every real deployment, where this is inert.
"""

from __future__ import annotations

import os
import sys

FAULT_EXIT_CODE = 97


class FaultInjector:
    def __init__(self, fault_at: str | None = None) -> None:
        self.fault_at = fault_at

    def checkpoint(self, name: str) -> None:
        if self.fault_at is not None and name == self.fault_at:
            sys.stderr.write(f"fault injection: exiting at {name}\n")
            sys.stderr.flush()
            os._exit(FAULT_EXIT_CODE)


NO_FAULTS = FaultInjector(None)
