"""Domain errors: plain exceptions with no HTTP in them.

The web layer maps each class to a status in one table (bridge.web.STATUS); the SCIM and SAML
adapters add their own renderings. `detail` is safe to show to the client.
"""

from __future__ import annotations


class BridgeError(Exception):
    """Base of every error a caller is expected to handle."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(BridgeError):
    """The named account, user, group, token or IdP does not exist (in this account)."""


class Conflict(BridgeError):
    """The change collides with what is stored: a taken name, a stale version."""


class InvalidInput(BridgeError):
    """The request is well-formed but a value is not acceptable."""


class PreconditionFailed(BridgeError):
    """The caller's expected version does not match the stored one."""


class Unauthorized(BridgeError):
    """Missing, unknown or revoked credentials."""


class Unavailable(BridgeError):
    """The store cannot serve the request now (unreachable, busy, behind on migrations)."""


class Forbidden(BridgeError):
    """The caller is known but may not do this: an API key without the scope, a signed-in
    person who is not an admin."""


class GuardRefused(Conflict):
    """A change would break one of the account policy's guards (e.g. keep_at_least_one)."""

    def __init__(self, guard: str, detail: str) -> None:
        super().__init__(f"refused by guard {guard}: {detail}")
        self.guard = guard


class PolicyInvalid(InvalidInput):
    """A policy source does not load; `problems` lists every error as file:line:col."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(f"the policy does not load ({len(problems)} errors)")
        self.problems = problems
