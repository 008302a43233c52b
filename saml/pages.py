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


_TEST_START = (
    _HEAD
    + """<h1>Test login with {{ idp }}</h1>
<p>This runs a real sign-in at <strong>{{ idp }}</strong> for the account
<code>{{ slug }}</code> and shows what the IdP sends and what the account's policy would decide.
<strong>Nobody is signed in here and nobody is created or changed.</strong></p>
<p>Sign in at the IdP as the person whose login you want to check. This link works once, until
{{ expires }}.</p>
<form method=post><button type=submit>Continue to {{ idp }}</button></form>
</body></html>"""
)

_TEST_RESULT = (
    _HEAD
    + """<h1>Test login: what {{ idp }} sent</h1>
<p role=status><strong>This was a test: nobody was signed in, nobody was created or changed, and
no session was opened.</strong> The response passed every check a real sign-in makes.</p>
<h2>The IdP sent</h2>
<dl><dt>NameID</dt><dd><code id=name-id>{{ name_id }}</code>
{% if name_id_format %}<small>({{ name_id_format }})</small>{% endif %}</dd>
{% if session_index %}<dt>SessionIndex</dt><dd><code>{{ session_index }}</code></dd>{% endif %}
</dl>
<h3>Attributes</h3>
{% if attributes %}<table id=attributes cellpadding=4><tr><th align=left>name</th>
<th align=left>values</th></tr>
{% for name, values in attributes %}<tr><td><code>{{ name }}</code></td>
<td>{% for v in values %}<code>{{ v }}</code>{% if not loop.last %}, {% endif %}{% endfor %}</td>
</tr>{% endfor %}</table>{% else %}<p>None.</p>{% endif %}
<h2>A real sign-in would</h2>
<p id=outcome>{% if p.outcome == "create" %}create the user <strong>{{ p.user_name }}</strong>
(just-in-time) and sign them in.
{% elif p.outcome == "update" %}sign in the existing user <strong>{{ p.user_name }}</strong>.
{% else %}be refused: <code>{{ p.outcome }}</code> ({{ p.detail }}).{% endif %}</p>
<h2>What the policy would decide</h2>
<p>Policy: {{ p.policy_source or "none" }}{% if p.policy_error %};
<strong>error:</strong> {{ p.policy_error }}{% endif %}</p>
{% set d = p.decision %}
{% if d %}
{% if d.errors %}<p><strong>The policy cannot decide</strong> (access would be kept as it is):
{{ d.errors|join("; ") }}</p>{% endif %}
<dl id=decision>
<dt>Role</dt><dd><strong>{{ d.role.value or "none" }}</strong>
{% if d.role.rule %}<small>rule {{ d.role.rule }}</small>{% endif %}</dd>
<dt>Environments</dt><dd>{% if d.environments.value is string %}{{ d.environments.value }}
{% else %}{{ d.environments.value|join(", ") or "none" }}{% endif %}
{% if d.environments.rule %}<small>rule {{ d.environments.rule }}</small>{% endif %}</dd>
<dt>Groups</dt><dd>{% for g in d.groups %}{{ g.name }} <small>rule {{ g.rule }}</small>
{% if not loop.last %}, {% endif %}{% else %}none{% endfor %}</dd>
</dl>
<h3>Grants</h3>
{% if d.grants %}<table id=grants cellpadding=4><tr><th align=left>for</th>
<th align=left>environment</th><th align=left>what</th><th align=left>level</th>
<th align=left>rule</th></tr>
{% for g in d.grants %}<tr>
<td>{{ "group " ~ g.subject if g.subject != "user" else "the user" }}</td>
<td>{{ g.environment }}</td><td>{% if g.folder %}folder <code>{{ g.folder }}</code>
{% else %}collection <code>{{ g.collection }}</code>{% endif %}</td><td>{{ g.level }}</td>
<td>{{ g.rule }}</td></tr>{% endfor %}</table>{% else %}<p>None.</p>{% endif %}
<h3>Why</h3>
<ul>{% for s in d.explanation %}<li><code>{{ s.rule }}</code>:
{{ "matched" if s.matched else "did not match" }}{% if s.detail %}: {{ s.detail }}{% endif %}</li>
{% endfor %}</ul>
{% else %}<p>No policy applies, so access would be kept as it is.</p>{% endif %}
<p><a href="{{ back }}">Back to the IdP connection</a></p>
</body></html>"""
)


def test_start(idp: str, slug: str, expires: str) -> str:
    """A test login's one-time start page: a button, so a link preview cannot use it up."""
    return render_template_string(
        _TEST_START, title=f"Test login with {idp}", idp=idp, slug=slug, expires=expires
    )


def test_result(
    *,
    idp: str,
    name_id: str,
    name_id_format: str | None,
    session_index: str | None,
    attributes: dict[str, list[str]],
    preview: Any,
    back: str,
) -> str:
    """What the IdP sent and what the policy would decide; nothing was written but the logs."""
    return render_template_string(
        _TEST_RESULT,
        title=f"Test login with {idp}",
        idp=idp,
        name_id=name_id,
        name_id_format=name_id_format,
        session_index=session_index,
        attributes=sorted(attributes.items()),
        p=preview,
        back=back,
    )
