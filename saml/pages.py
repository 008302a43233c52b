"""The person-facing pages of sign-in and sign-out: who is signed in, sign-out confirmation.

Rendered by Jinja with autoescaping (Flask escapes templates made from strings), so nothing a
user or an IdP sent can become markup.
"""

from __future__ import annotations

from typing import Any

from flask import render_template_string

_HEAD = (
    "<!doctype html><html lang=en><meta charset=utf-8>"
    "<meta name=viewport content='width=device-width,initial-scale=1'>"
    "<title>{{ title }}</title>"
    "<body style='font-family:sans-serif;max-width:46em;margin:3em auto;padding:0 1em'>"
)
_SIGN_OUT = (
    "<form method=post action='/logout'>"
    "<input type=hidden name=csrf_token value='{{ csrf_token }}'>"
    "<button type=submit>Sign out</button></form>"
)

_SIGNED_IN = (
    _HEAD
    + """<h1>Signed in</h1>
<p>You are <strong>{{ doc.user.userName }}</strong>{% if doc.user.displayName %}
({{ doc.user.displayName }}){% endif %} in the account <code>{{ doc.account }}</code>.
This session ends at {{ doc.expires }}.</p>
<h2>Role</h2>
{% if role %}<p><strong>{{ role.role }}</strong> <small>{{ origin(role.provenance) }}</small></p>
{% else %}<p>No role yet.</p>{% endif %}
<h2>Environments</h2>
{% if environments %}<ul>{% for e in environments %}
<li><strong>{{ e.environment }}</strong> <small>{{ origin(e.provenance) }}</small></li>
{% endfor %}</ul>{% else %}<p>None.</p>{% endif %}
<h2>Groups</h2>
{% if groups %}<ul>{% for m in groups %}
<li><strong>{{ m.group }}</strong> <small>{{ origin(m.provenance) }}</small></li>
{% endfor %}</ul>{% else %}<p>None.</p>{% endif %}
<h2>Folder and collection grants</h2>
{% if grants %}<table cellpadding=4>
<tr><th align=left>environment</th><th align=left>what</th><th align=left>level</th>
<th align=left>through</th><th align=left>where it came from</th></tr>
{% for g in grants %}<tr><td>{{ g.environment }}</td><td>{{ g.kind }} <code>{{ g.path }}</code></td>
<td>{{ g.level }}</td><td>{{ "group " ~ g.group if g.group else "you" }}</td>
<td>{{ origin(g.provenance) }}</td></tr>
{% endfor %}</table>{% else %}<p>None.</p>{% endif %}
"""
    + _SIGN_OUT
    + "</body></html>"
)

_CONFIRM = (
    _HEAD
    + "<h1>Sign out?</h1><p>You are signed in as <strong>{{ user_name }}</strong>.</p>"
    + _SIGN_OUT
    + "</body></html>"
)

_MESSAGE = _HEAD + "<h1>{{ title }}</h1><p>{{ text }}</p>{{ extra }}</body></html>"


def origin(provenance: str) -> str:
    """Where an access row came from, in words (provenance: scim, saml, policy:<rule>, manual)."""
    if provenance == "policy:grants":
        return "from the account's policy (its grants: for this group)"
    if provenance.startswith("policy:"):
        return f"from the account's policy, rule {provenance.removeprefix('policy:')}"
    return {
        "scim": "pushed by your identity provider (SCIM)",
        "saml": "from your sign-in (SAML)",
        "manual": "set by an administrator",
    }.get(provenance, f"from {provenance}")


def signed_in(doc: dict[str, Any], access: dict[str, Any], csrf_token: str) -> str:
    """The signed-in page: who, role, environments, groups and grants with their origins."""
    return render_template_string(
        _SIGNED_IN,
        title=f"Signed in as {doc['user']['userName']}",
        doc=doc,
        role=access["role"],
        environments=access["environments"],
        groups=access["groups"],
        grants=access["grants"],
        origin=origin,
        csrf_token=csrf_token,
    )


def confirm_sign_out(user_name: str, csrf_token: str) -> str:
    """GET /logout: a question and a button; a link alone never signs anyone out."""
    return render_template_string(
        _CONFIRM, title="Sign out?", user_name=user_name, csrf_token=csrf_token
    )


def message(title: str, text: str) -> str:
    """A one-paragraph page (signed out, not signed in, a refused sign-out)."""
    return render_template_string(_MESSAGE, title=title, text=text, extra="")
