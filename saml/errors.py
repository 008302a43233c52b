"""Refused logins: a typed reason for the record, and a plain page for the person."""

from __future__ import annotations

from html import escape


class SamlRejected(Exception):
    """A login or logout message refused; `reason` is recorded, `detail` is for admins."""

    def __init__(self, reason: str, detail: str, status: int = 400) -> None:
        super().__init__(detail)
        self.reason, self.detail, self.status = reason, detail, status
        self.idp_id: int | None = None  # what is known of the login, for the login log
        self.name_id: str | None = None


# What the person sees, and what to ask their admin. Never raw XML or a stack trace.
ADVICE = {
    "user_not_provisioned": (
        "Your account has not been set up here yet",
        "Ask your IT admin to assign you to this application in your identity provider.",
    ),
    "user_deactivated": (
        "Your account is deactivated",
        "Ask your IT admin to reactivate your access to this application.",
    ),
    "idp_initiated_not_allowed": (
        "Please sign in from the application",
        "Open the application and choose “Sign in with SSO”: this identity provider may not "
        "start sign-ins here.",
    ),
    "expired": (
        "Your sign-in took too long",
        "Go back to the application and sign in again.",
    ),
    "replayed": (
        "This sign-in was already used",
        "Go back to the application and sign in again.",
    ),
    "unknown_in_response_to": (
        "This sign-in does not match one we started",
        "Go back to the application and sign in again.",
    ),
    "unavailable": (
        "Sign-in is briefly unavailable",
        "Wait a few seconds, then go back to the application and sign in again.",
    ),
    "bad_relay_state": (
        "The sign-in asked to send you somewhere we do not trust",
        "Start again from the application's own sign-in page.",
    ),
    "not_reauthenticated": (
        "The application asked you to sign in again",
        "Your identity provider reused an earlier sign-in. Sign out there, then try again; "
        "if it keeps happening, your IT admin should let it honour ForceAuthn.",
    ),
}
DEFAULT_ADVICE = (
    "We could not sign you in",
    "Try again from the application. If it keeps failing, give your IT admin the reference below.",
)
# Where the reference leads: the account's sign-in log when the account is known, else the
# service's JSON log (a line carrying the same `reference`).
WHERE = {
    True: "Admins: the reason is in the sign-in log (`idbridge logins <account> --failed`).",
    False: "Admins: the reason is in the service log, on the line whose `reference` is this one.",
}


def page(reason: str, request_id: str | None, *, in_login_log: bool) -> str:
    title, advice = ADVICE.get(reason, DEFAULT_ADVICE)
    ref = escape(f"{reason} / {request_id or '-'}")
    return (
        "<!doctype html><html lang=en><meta charset=utf-8>"
        f"<title>{escape(title)}</title>"
        "<body style='font-family:sans-serif;max-width:36em;margin:4em auto'>"
        f"<h1>{escape(title)}</h1><p>{escape(advice)}</p>"
        f"<p style='color:#666'>Reference: <code>{ref}</code><br>{escape(WHERE[in_login_log])}"
        "</p></body></html>"
    )
