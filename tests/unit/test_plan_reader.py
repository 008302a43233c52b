"""`policy plan` reads a stored user's inputs from the row (bridge.profiles.Reader and
Evaluator.key) instead of building the whole Profile: the input values and the Decision must be
those of the Profile the write path builds (bridge.profiles.build), for any stored user."""

import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge import profiles
from policies import Evaluator, Profile, loads
from policies.conditions import InputError

ENT = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
POLICY = """
account: acme
environments: [production, staging]
inputs:
  phone: {scim: phoneNumbers.value}
  boss: {scim: "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value"}
  state: {scim: active}
  team: {saml: {from: [team, department], split: ","}, scim: title}
  cost_center:
    saml: costCenter
    scim: "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:costCenter"
rules:
  - name: partner
    when: {email_domain: {in: [partner.example]}}
    then: {role: billing}
  - name: uk
    when: {phone: {glob: "+44*"}}
    then: {groups: [UK]}
  - name: managed
    when: {any: [{boss: {equals: m1}}, {state: {equals: "false"}}, {cost_center: {glob: "FIN*"}}]}
    then: {environments: [staging]}
  - name: okta
    when: {all: [{idp: {equals: "urn:okta"}}, {source: {equals: saml}}]}
    then: {role: admin}
  - name: teams
    when:
      any:
        - {team: {contains: Ops}}
        - {groups: {contains: cld-admins}}
        - {department: {equals: Sales}}
    then: {role: technical_admin}
  - name: named
    when: {userName: {matches: "^x"}}
    then: {environments: all}
"""
PLAN = loads(POLICY)
TEXT = st.sampled_from(["", " ", "Sales", " Ops ", "FIN-1", "m1", "a,Ops", "x@partner.example"])
EMAILS = st.lists(
    st.sampled_from(["a@partner.example", "B@Partner.Example", "c@other.example", "plain", " "]),
    max_size=3,
).map(tuple)
SAVED = st.one_of(
    st.none(),
    st.just({}),
    st.fixed_dictionaries(
        {
            "idp": st.sampled_from([None, "", "urn:okta", "urn:other"]),
            "attributes": st.one_of(
                st.none(),
                st.dictionaries(
                    st.sampled_from(
                        ["team", "department", "costCenter", "email", "groups", "title", "x"]
                    ),
                    st.lists(TEXT, max_size=2),
                    max_size=3,
                ),
            ),
        }
    ),
)


@settings(max_examples=300, deadline=None)
@given(
    user_name=st.sampled_from(["xavier", "ann@partner.example", "bob@other.example"]),
    active=st.sampled_from([True, False, None]),
    title=st.one_of(st.none(), TEXT),
    department=st.one_of(st.none(), TEXT),
    cost_center=st.one_of(st.none(), TEXT),
    manager=st.one_of(st.none(), TEXT),
    saved=SAVED,
    emails=EMAILS,
    phones=st.lists(st.sampled_from(["+44 20 1", "+1 555", ""]), max_size=2).map(tuple),
    groups=st.lists(st.sampled_from(["cld-admins", "Everyone"]), max_size=2).map(tuple),
)
def test_the_reader_gives_the_inputs_and_decision_build_gives(
    user_name, active, title, department, cost_center, manager, saved, emails, phones, groups
):
    evaluator = Evaluator(PLAN)
    columns = {
        "id": uuid.uuid4(),
        "user_name": user_name,
        "active": active,
        "saml_attributes": saved,
        "title": title,
        "department": department,
        "cost_center": cost_center,
        "manager_id": manager,
    }
    full = profiles.build(columns, emails=emails, phones=phones, groups=groups)
    expected_key, expected = evaluator.decide(full)

    # what plan selects and reads: the columns of the attributes the policy reads
    read = evaluator.attributes
    assert {"phoneNumbers.value", "emails.value", "active", profiles.MANAGER} <= read
    reader = profiles.Reader(list(columns), read)
    row = tuple(columns.values())
    source, idp, attributes = reader.parts(row, emails, phones)
    try:
        key = evaluator.key(source, user_name, idp, attributes, groups)
    except InputError:
        key = None
    assert key == expected_key
    only = Profile(source, user_name, idp=idp, attributes=attributes, groups=groups)
    assert Evaluator(PLAN)(only) == expected
