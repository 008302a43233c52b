"""Evaluations per second of a generated 50-rule policy over varied profiles.

Run: python bench/policy_engine.py [seconds]   (default 3 s of timed evaluation; stays under 30 s)
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from policies import IdpLink, Profile, Source, evaluate, loads

RULES = 50
ENVIRONMENTS = ("production", "staging", "development", "eu", "us")
ROLES = ("admin", "technical_admin", "media_library_admin", "billing", "reports")
ENTRA_GROUPS = "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups"
DEPARTMENT = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department"


def policy_text(rng: random.Random) -> str:
    """A policy mixing every operator and combinator, with group grants."""
    lines = [
        "account: bench",
        f"environments: [{', '.join(ENVIRONMENTS)}]",
        "inputs:",
        "  cost_center: {saml: costCenter, scim: costCenter}",
        "defaults: {role: media_library_user, environments: [production]}",
        "rules:",
    ]
    conditions = [
        "{{groups: {{contains: team-{n}}}}}",
        "{{department: {{in: [Dept-{n}, Dept-{m}]}}}}",
        "{{title: {{matches: '(Senior |Staff )?Role-{n}'}}}}",
        "{{email: {{glob: '*@corp{n}.example'}}}}",
        "{{all: [{{groups: {{contains: team-{n}}}}}, {{department: {{equals: Dept-{m}}}}}]}}",
        "{{any: [{{cost_center: {{equals: CC-{n}}}}}, {{email_domain: {{in: [d{m}.example]}}}}]}}",
        "{{not: {{title: {{present: true}}}}, groups: {{contains: team-{n}}}}}",
    ]
    for n in range(RULES):
        when = conditions[n % len(conditions)].format(n=n, m=rng.randrange(RULES))
        envs = rng.sample(ENVIRONMENTS, rng.randint(1, 3))
        lines += [
            f"  - name: rule-{n}",
            f"    when: {when}",
            "    then:",
            f"      role: {rng.choice(ROLES)}",
            f"      environments: [{', '.join(envs)}]",
            f"      groups: [Group-{n % 10}]",
            f"      grants: [{{environment: {envs[0]}, folder: 'f{n}/', level: viewer}}]",
        ]
    lines.append("grants:")
    for g in range(10):
        lines.append(f"  Group-{g}: [{{environment: production, folder: 'g{g}/', level: editor}}]")
    return "\n".join(lines) + "\n"


def profiles(rng: random.Random, count: int) -> list[Profile]:
    """SAML and SCIM profiles with a few matching and many non-matching values."""
    out = []
    for i in range(count):
        groups = tuple(f"team-{rng.randrange(RULES * 4)}" for _ in range(rng.randint(0, 12)))
        dept = f"Dept-{rng.randrange(RULES)}"
        title = f"{rng.choice(['', 'Senior ', 'Junior '])}Role-{rng.randrange(RULES * 2)}"
        email = f"u{i}@{rng.choice(['corp3.example', 'd7.example', 'other.example'])}"
        if i % 2:
            attributes = {
                ENTRA_GROUPS: groups,
                "department": (dept,),
                "title": (title,),
                "email": (email,),
                "costCenter": (f"CC-{rng.randrange(RULES)}",),
            }
            idp = IdpLink("https://idp.example/bench", email)
            out.append(Profile(Source.SAML, email, idp=idp, attributes=attributes))
        else:
            attributes = {DEPARTMENT: (dept,), "title": (title,), "emails.value": (email,)}
            out.append(Profile(Source.SCIM, email, attributes=attributes, groups=groups))
    return out


def main() -> None:
    seconds = min(float(sys.argv[1]) if len(sys.argv) > 1 else 3.0, 25.0)
    rng = random.Random(7)
    started = time.perf_counter()
    policy = loads(policy_text(rng), "bench.yaml")
    loaded = time.perf_counter() - started
    sample = profiles(rng, 1000)
    count, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        for profile in sample[:100]:
            evaluate(policy, profile)
        count += 100
        sample.append(sample.pop(0))
    print(f"policy: {len(policy.rules)} rules, loaded in {loaded * 1000:.1f} ms")
    print(f"{count / elapsed:,.0f} evaluations/s ({count} in {elapsed:.2f} s, one core)")


if __name__ == "__main__":
    main()
