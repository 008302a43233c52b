"""SCIM queries through HTTP: every filter operator, pagination, sorting, projection, .search."""

import time
from datetime import datetime

import pytest

from tests.integration.test_scim_protocol import scim_error

ENT = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
CORE = "urn:ietf:params:scim:schemas:core:2.0:User"
ALL = ["Bob@Example.com", "alice@example.com", "carol@other.org", "dave_100%@example.com"]
# Created in an order no sort below produces, so that a sort the database skipped shows.
PEOPLE = [
    {
        "userName": "carol@other.org",
        "externalId": "E-3",
        "title": None,
        "active": True,
        "name": {"givenName": "Carol"},
        "displayName": "Carol C",
        ENT: {"department": "R&D", "employeeNumber": "300"},
    },
    {
        "userName": "alice@example.com",
        "externalId": "E-1",
        "title": "Engineer",
        "active": True,
        "name": {"givenName": "Alice", "familyName": "Archer"},
        "displayName": "Alice A",
        "emails": [
            {"value": "alice@example.com", "type": "work", "primary": True},
            {"value": "alice@home.example", "type": "home"},
        ],
        ENT: {"department": "R&D", "employeeNumber": "100"},
    },
    {
        "userName": "dave_100%@example.com",
        "externalId": "E-4",
        "title": "Designer",
        "active": True,
        "name": {"givenName": "Dave", "familyName": "Dunn"},
    },
    {
        "userName": "Bob@Example.com",
        "externalId": "e-2",
        "title": "Engineering Manager",
        "active": False,
        "name": {"givenName": "Bob", "familyName": "Baker"},
        "emails": [{"value": "bob@example.com", "type": "work"}],
        ENT: {"department": "Sales", "employeeNumber": "200"},
    },
]


@pytest.fixture
def people(scim):
    ids = {}
    for person in PEOPLE:
        body = {k: v for k, v in person.items() if v is not None}
        ids[person["userName"]] = scim.post("Users", json=body).json["id"]
    return ids


def found(scim, flt, **params):
    resp = scim.get("Users", query_string={"filter": flt, **params})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return sorted(r["userName"] for r in resp.json["Resources"])


def test_filters_of_one_shape_answer_by_their_own_values(scim, people):
    """A page's statement is built once per filter shape (scim.listing): each filter of the same
    shape, asked in turn, answers by its own values, bound or kept in the statement."""
    by_id = {v: k for k, v in people.items()}
    bob, alice = people["Bob@Example.com"], people["alice@example.com"]
    for _ in range(2):  # the second round reads every shape from the cache
        assert found(scim, 'userName eq "BOB@example.COM"') == ["Bob@Example.com"]
        assert found(scim, 'userName eq "ALICE@example.com"') == ["alice@example.com"]
        assert found(scim, 'userName eq "nobody@example.com"') == []
        assert found(scim, 'title eq "Engineer" or externalId eq "E-4"') == [
            "alice@example.com",
            "dave_100%@example.com",
        ]
        assert found(scim, 'title eq "Designer" or externalId eq "E-3"') == [
            "carol@other.org",
            "dave_100%@example.com",
        ]
        assert found(scim, 'emails[type eq "home" and value eq "alice@home.example"]') == [
            "alice@example.com"
        ]
        assert found(scim, 'emails[type eq "work" and value eq "alice@home.example"]') == []
        assert found(scim, 'userName co "other"') == ["carol@other.org"]
        assert found(scim, 'userName co "100%"') == ["dave_100%@example.com"]
        assert found(scim, f'id eq "{bob}"') == [by_id[bob]]
        assert found(scim, f'id eq "{alice}"') == [by_id[alice]]
        assert found(scim, 'active eq "False"') == ["Bob@Example.com"]
        assert found(scim, 'active eq "True"') == [
            "alice@example.com",
            "carol@other.org",
            "dave_100%@example.com",
        ]
        assert found(scim, "title eq 1") == found(scim, "title eq true") == []
        assert found(scim, 'title gt "Engineer"', count=1, startIndex=1) == ["Bob@Example.com"]
        assert found(scim, 'title ge "Engineer"', sortBy="title", count=1, startIndex=2) == [
            "Bob@Example.com"
        ]


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        ('userName eq "BOB@example.COM"', ["Bob@Example.com"]),
        (
            'userName ne "bob@example.com"',
            ["alice@example.com", "carol@other.org", "dave_100%@example.com"],
        ),
        (
            'userName co "EXAMPLE"',
            ["Bob@Example.com", "alice@example.com", "dave_100%@example.com"],
        ),
        ('userName sw "car"', ["carol@other.org"]),
        ('userName ew ".ORG"', ["carol@other.org"]),
        ('userName co "100%"', ["dave_100%@example.com"]),
        ('userName co "_"', ["dave_100%@example.com"]),
        ('externalId eq "e-1"', []),
        ('externalId eq "E-1"', ["alice@example.com"]),
        ("title pr", ["Bob@Example.com", "alice@example.com", "dave_100%@example.com"]),
        ("not (title pr)", ["carol@other.org"]),
        ('title gt "Engineer"', ["Bob@Example.com"]),
        ('title ge "Engineer"', ["Bob@Example.com", "alice@example.com"]),
        ('title lt "E"', ["dave_100%@example.com"]),
        ('title le "Designer"', ["dave_100%@example.com"]),
        ("active eq false", ["Bob@Example.com"]),
        ('name.givenName eq "alice"', ["alice@example.com"]),
        (
            'name.familyName pr and not (name.familyName eq "Dunn")',
            ["Bob@Example.com", "alice@example.com"],
        ),
        (f'{ENT}:department eq "r&d"', ["alice@example.com", "carol@other.org"]),
        (f'{ENT}:employeeNumber gt "150"', ["Bob@Example.com", "carol@other.org"]),
        ('emails.value eq "ALICE@home.example"', ["alice@example.com"]),
        ('emails eq "bob@example.com"', ["Bob@Example.com"]),
        (
            'emails[type eq "work" and value co "@example.com"]',
            ["Bob@Example.com", "alice@example.com"],
        ),
        ('emails[type eq "home"].value eq "alice@home.example"', ["alice@example.com"]),
        ("emails[primary eq true]", ["alice@example.com"]),
        # `and` binds tighter than `or` (RFC 7644 §3.4.2.2)
        ('userName sw "carol" or title eq "Engineer" and active eq false', ["carol@other.org"]),
        (
            '(userName sw "carol" or title eq "Engineer") and active eq true',
            ["alice@example.com", "carol@other.org"],
        ),
        ('meta.resourceType eq "User" and userName sw "a"', ["alice@example.com"]),
        ('meta.resourceType eq "Group"', []),
        ('meta.resourceType ne "User"', []),
        ('id eq "not-a-uuid"', []),
        # `ne` keeps everyone else, and never someone whose value is the one excluded
        ("active ne true", ["Bob@Example.com"]),
        ("active ne false", ["alice@example.com", "carol@other.org", "dave_100%@example.com"]),
        ('title ne "Engineer"', ["Bob@Example.com", "dave_100%@example.com"]),
        # Entra sends booleans as the strings "True" and "False"
        ('active eq "True"', ["alice@example.com", "carol@other.org", "dave_100%@example.com"]),
        ('active eq "False"', ["Bob@Example.com"]),
        ('active ne "False"', ["alice@example.com", "carol@other.org", "dave_100%@example.com"]),
        # `_` and `%` are characters, never LIKE wildcards
        ('userName sw "dave_"', ["dave_100%@example.com"]),
        ('userName sw "_"', []),
        ('userName sw "%"', []),
        ('userName sw "d_ve"', []),
        ('userName ew "0%@example.com"', ["dave_100%@example.com"]),
        ('userName ew "%"', []),
        ('userName ew "_100%@example.com"', ["dave_100%@example.com"]),
        ('userName ew "%example.com"', []),
        ('userName co "a_e"', []),
        # `eq null`: no value at all; `ne null`: some value (simple and multi-valued)
        ("title eq null", ["carol@other.org"]),
        ("title ne null", ["Bob@Example.com", "alice@example.com", "dave_100%@example.com"]),
        ("emails eq null", ["carol@other.org", "dave_100%@example.com"]),
        ("emails ne null", ["Bob@Example.com", "alice@example.com"]),
        ("emails.value eq null", ["carol@other.org", "dave_100%@example.com"]),
        ("not (emails eq null)", ["Bob@Example.com", "alice@example.com"]),
        # a number compares as its text; an attribute named with its core schema URN
        (f"{ENT}:employeeNumber eq 100", ["alice@example.com"]),
        (f'{CORE}:userName sw "ALICE"', ["alice@example.com"]),
        (f'{CORE}:name.familyName eq "baker"', ["Bob@Example.com"]),
        (f'{CORE}:emails[type eq "work"].value eq "BOB@example.com"', ["Bob@Example.com"]),
        (f'{CORE}:emails[type eq "home"]', ["alice@example.com"]),
        # schemas compare exactly; meta.resourceType ignores case
        (f'schemas eq "{CORE}"', ALL),
        (f'schemas eq "{CORE.upper()}"', []),
        ('meta.resourceType eq "user"', ALL),
        ("meta.resourceType pr", ALL),
        ("not (meta.resourceType pr)", []),
        # ordering is by code point on both databases, punctuation included ('&' < '-' < 'a')
        (f'{ENT}:department gt "r-"', ["Bob@Example.com"]),
        (f'{ENT}:department lt "r-"', ["alice@example.com", "carol@other.org"]),
        # a longer chain: and binds tighter than or on either side
        (
            'title eq "Designer" or active eq false and title pr or userName sw "carol"',
            ["Bob@Example.com", "carol@other.org", "dave_100%@example.com"],
        ),
        (
            'not (title eq "Designer" or active eq false) and title pr',
            ["alice@example.com"],
        ),
    ],
)
def test_filter(scim, people, flt, expected):
    """Each operator and combinator selects exactly the users it should."""
    assert found(scim, flt) == expected


def test_filter_by_id_and_dates(scim, people):
    """id eq and ne, and meta.lastModified compared as a dateTime."""
    alice = people["alice@example.com"]
    assert found(scim, f'id eq "{alice}"') == ["alice@example.com"]
    assert found(scim, f'id ne "{alice}"') == [
        "Bob@Example.com",
        "carol@other.org",
        "dave_100%@example.com",
    ]
    assert len(found(scim, 'id ne "not-a-uuid"')) == 4
    assert len(found(scim, 'meta.lastModified gt "2000-01-01T00:00:00Z"')) == 4
    assert found(scim, 'meta.created lt "2000-01-01T00:00:00Z"') == []


def test_a_datetime_without_a_zone_is_utc_whatever_the_servers_zone(scim, monkeypatch):
    """xsd:dateTime without a zone is read as UTC (as stored), not as the server's local time:
    a server running with TZ=Asia/Tokyo finds the user created at that UTC instant."""
    user = scim.post("Users", json={"userName": "tz"}).json
    created = datetime.fromisoformat(user["meta"]["created"].replace("Z", "+00:00"))
    naive = created.replace(tzinfo=None).isoformat()
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        assert found(scim, f'meta.created eq "{naive}"') == ["tz"]
        assert found(scim, f'meta.created gt "{naive}"') == []
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.parametrize(
    ("flt", "detail"),
    [
        (
            'userName regex "x"',
            "cannot parse filter 'userName regex \"x\"': unexpected 'regex' at position 10",
        ),
        ("userName eq", "cannot parse filter 'userName eq': it ends too early"),
        ("((", "cannot parse filter '((': it ends too early"),
        # single quotes and unterminated strings: the character the lexer stopped at
        (
            "userName eq 'x'",
            """cannot parse filter "userName eq 'x'": Illegal character in filter query '''""",
        ),
        (
            'userName eq "x',
            """cannot parse filter 'userName eq "x': Illegal character in filter query '"'""",
        ),
        ('nosuch eq "x"', "attribute 'nosuch' cannot be filtered on"),
        ("active gt true", "active is a boolean: only eq, ne and pr apply"),
        (
            'meta.created eq "yesterday"',
            "meta.created is a dateTime; compare it with a quoted xsd:dateTime",
        ),
        ('name eq "x"', "attribute 'name' cannot be filtered on"),
        ('emails[nosuch eq "x"]', "emails[...] has no sub-attribute 'nosuch'"),
        ("urn:nope:Thing:attr eq 1", "unknown schema 'urn:nope:Thing'"),
        # a value path under another schema's URN is that schema's attribute, not ours
        ('urn:nope:Thing:emails[type eq "work"].value eq "x"', "unknown schema 'urn:nope:Thing'"),
        ('urn:nope:Thing:emails[type eq "work"]', "unknown schema 'urn:nope:Thing'"),
        ("title gt null", "title gt null compares nothing"),
        ('active eq "yes"', "active is a boolean; compare it with true or false"),
        ("active eq 1", "active is a boolean; compare it with true or false"),
        ('active co "t"', "active is a boolean: only eq, ne and pr apply"),
        ("id gt 5", "id is an identifier: only eq, ne and pr apply"),
        ('meta.created co "2020"', "meta.created is a dateTime: co does not apply"),
        ('meta.created sw "2020-01-01T00:00:00Z"', "meta.created is a dateTime: sw does not apply"),
        ('meta.lastModified ew "2020-01-01"', "meta.lastModified is a dateTime: ew does not apply"),
        (
            'meta.resourceType gt "User"',
            "meta.resourceType can only be compared with eq or ne and a string",
        ),
        (
            "meta.resourceType eq true",
            "meta.resourceType can only be compared with eq or ne and a string",
        ),
        ("emails.nosuch eq 1", "emails.nosuch has no sub-attribute 'nosuch'"),
        ('emails[type eq "work"] eq "x"', "a value path must name a sub-attribute to compare"),
        (
            'emails[type eq "work"].value.x eq "x"',
            'cannot parse filter \'emails[type eq "work"].value.x eq "x"\': '
            "unexpected 'x' at position 29",
        ),
        ('title[value eq "x"]', "title is not a multi-valued attribute"),
        ('title.x eq "y"', "title.x has no sub-attribute 'x'"),
        ('emails[value.x eq "y"]', "emails[...] has no sub-attribute 'value.x'"),
        ("x" * 4097, "the filter is longer than 4096 characters"),
        ("   ", "cannot parse filter '   ': it ends too early"),  # blank is not "everyone"
    ],
)
def test_bad_filter_is_invalid_filter(scim, people, flt, detail):
    """Unparseable filters, unknown attributes and wrong comparisons are 400 invalidFilter,
    and the detail says exactly what is wrong."""
    body = scim_error(scim.get("Users", query_string={"filter": flt}), 400, "invalidFilter")
    assert body["detail"] == detail


def test_brackets_inside_a_quoted_value_do_not_count_as_nesting(scim):
    """A value may hold any number of parentheses and brackets: only the filter's own nesting
    is limited."""
    nick = "(" * 40 + "[" * 40
    scim.post("Users", json={"userName": "brackets", "nickName": nick})
    assert found(scim, f'nickName eq "{nick}"') == ["brackets"]
    assert found(scim, "(" * 32 + "nickName pr" + ")" * 32) == ["brackets"]
    body = scim_error(
        scim.get("Users", query_string={"filter": "(" * 33 + "nickName pr" + ")" * 33}),
        400,
        "invalidFilter",
    )
    assert body["detail"] == "the filter nests deeper than 32 levels"


def test_nesting_counts_brackets_inside_one_another_only(scim):
    """The limit is on depth: a group closed earlier does not add to the next one, and no other
    character counts, whatever its case (attribute names ignore case: EXTERNALID)."""
    scim.post("Users", json={"userName": "nest", "externalId": "n-1"})
    deepest = "(" * 31 + "(EXTERNALID pr)" + ")" * 31  # 32 levels
    assert found(scim, "(userName pr) and " + deepest) == ["nest"]
    too_deep = "(EXTERNALID pr) and " + "(" * 33 + "userName pr" + ")" * 33
    body = scim_error(scim.get("Users", query_string={"filter": too_deep}), 400, "invalidFilter")
    assert body["detail"] == "the filter nests deeper than 32 levels"


def test_filter_at_the_length_limit_is_answered(scim, people):
    """A filter of exactly 4096 characters is evaluated."""
    flt = 'userName eq "' + "x" * (4096 - len('userName eq ""')) + '"'
    assert len(flt) == 4096 and found(scim, flt) == []


def test_escaped_strings_and_numbers_in_filters(scim):
    """JSON escapes in a compValue are decoded; multi-digit and negative numbers compare as text."""
    scim.post("Users", json={"userName": "q@example.com", "nickName": 'The "Boss" \\ \u00fc'})
    scim.post("Users", json={"userName": "n@example.com", "nickName": "-12.5"})
    assert found(scim, 'nickName eq "The \\"Boss\\" \\\\ \\u00fc"') == ["q@example.com"]
    assert found(scim, "nickName eq -12.5") == ["n@example.com"]
    assert found(scim, "nickName eq -12") == []


def test_bare_booleans_compare_with_text_as_true_or_false(scim):
    """`nickName eq true` finds the users whose nickName is the word "true", and no others."""
    for name, nick in [("t1", "true"), ("t2", "TRUE"), ("f1", "false"), ("n1", "yes")]:
        scim.post("Users", json={"userName": name, "nickName": nick})
    assert found(scim, "nickName eq true") == ["t1", "t2"]
    assert found(scim, "nickName eq false") == ["f1"]
    assert found(scim, "nickName ne true") == ["f1", "n1"]
    # externalId is caseExact: `true` is the text "true", not "TRUE"
    scim.post("Users", json={"userName": "x1", "externalId": "true"})
    scim.post("Users", json={"userName": "x2", "externalId": "TRUE"})
    assert found(scim, "externalId eq true") == ["x1"]
    assert found(scim, "externalId eq false") == []


def test_an_address_without_formatted_is_still_an_address(scim):
    """`addresses eq null` finds users with no address at all (RFC 7644 §3.4.2.2 `pr`: a complex
    value is present when it has any entry), not users whose address lacks `formatted`."""
    scim.post("Users", json={"userName": "town", "addresses": [{"locality": "Leeds"}]})
    scim.post("Users", json={"userName": "full", "addresses": [{"formatted": "1 Main St"}]})
    scim.post("Users", json={"userName": "none"})
    assert found(scim, "addresses eq null") == ["none"]
    assert found(scim, "addresses ne null") == ["full", "town"]
    assert found(scim, "addresses pr") == ["full", "town"]
    assert found(scim, "not (addresses pr)") == ["none"]
    # with a sub-attribute, that sub-attribute's value decides
    assert found(scim, "addresses.formatted eq null") == ["none", "town"]
    assert found(scim, "addresses.locality pr") == ["town"]
    assert found(scim, 'addresses co "main"') == ["full"]


def test_plus_encoded_query_string(scim, people):
    """Entra's `+`-encoded query strings decode to spaces."""
    resp = scim.get("/scim/v2/Users?filter=userName+eq+%22alice%40example.com%22")
    assert resp.json["totalResults"] == 1


def test_random_guid_lookup_is_empty_list(scim):
    """Entra's test connection: a filter matching nothing is 200 with an empty list."""
    resp = scim.get(
        "Users", query_string={"filter": 'userName eq "0b5d6ac4-1b0d-4a8b-9d8f-1f1c1f1f1f1f"'}
    )
    assert resp.status_code == 200
    assert resp.json["totalResults"] == 0 and resp.json["Resources"] == []


def test_pagination_is_stable_and_complete(scim, people):
    """Pages of any size walk every user exactly once, in the same order each time."""
    walk = []
    start = 1
    while True:
        page = scim.get("Users", query_string={"startIndex": start, "count": 3}).json
        assert page["totalResults"] == 4 and page["startIndex"] == start
        walk += [r["id"] for r in page["Resources"]]
        if not page["Resources"]:
            break
        start += page["itemsPerPage"]
    assert sorted(walk) == sorted(people.values()) and len(walk) == 4
    again = [r["id"] for r in scim.get("Users", query_string={"count": 100}).json["Resources"]]
    assert again == walk


def test_count_zero_and_limits(scim, people):
    """count=0 gives totalResults only; counts above the maximum are clamped; bad ints are 400."""
    page = scim.get("Users", query_string={"count": 0}).json
    assert page["totalResults"] == 4 and page["Resources"] == [] and page["itemsPerPage"] == 0
    assert scim.get("Users", query_string={"count": 100000}).json["itemsPerPage"] == 4
    assert scim.get("Users", query_string={"startIndex": -5}).json["startIndex"] == 1
    scim_error(scim.get("Users", query_string={"count": "many"}), 400, "invalidValue")


@pytest.mark.parametrize(
    ("sort_by", "order", "expected"),
    [
        ("userName", "ascending", ["alice", "bob", "carol", "dave_100%"]),
        ("userName", "descending", ["dave_100%", "carol", "bob", "alice"]),
        ("name.givenName", "descending", ["dave_100%", "carol", "bob", "alice"]),
        ("title", "ascending", ["dave_100%", "alice", "bob", "carol"]),
        ("emails.value", "ascending", ["alice", "bob", "carol", "dave_100%"]),
        (f"{ENT}:employeeNumber", "descending", ["carol", "bob", "alice", "dave_100%"]),
        # externalId is caseExact: "e-2" sorts after every "E-"
        ("externalId", "ascending", ["alice", "carol", "dave_100%", "bob"]),
        ("meta.created", "descending", ["bob", "dave_100%", "alice", "carol"]),
    ],
)
def test_sorting(scim, people, sort_by, order, expected):
    """sortBy on simple, sub- and extension attributes; absent values sort last."""
    page = scim.get("Users", query_string={"sortBy": sort_by, "sortOrder": order}).json
    assert [r["userName"].split("@")[0].lower() for r in page["Resources"]] == expected


def test_sorting_and_ordering_filters_agree_on_punctuation(scim):
    """Names sort by their lower-cased code points, as `gt` compares them: "a_b" comes before
    "AB" ('_' is after 'B' but before 'b'), so paging by `gt` the last name seen misses nobody
    (userName through its folded key column, displayName through lower())."""
    for name in ("AB", "a_b", "a-c"):
        scim.post("Users", json={"userName": name, "displayName": name})
    for attr in ("userName", "displayName"):
        page = scim.get("Users", query_string={"sortBy": attr}).json
        assert [r["userName"] for r in page["Resources"]] == ["a-c", "a_b", "AB"], attr
        assert found(scim, f'{attr} gt "a-c"') == ["AB", "a_b"], attr
        assert found(scim, f'{attr} gt "a_b"') == ["AB"], attr


def test_sorting_by_a_multi_valued_attribute_uses_the_primary_value(scim):
    """sortBy emails.value orders by each user's primary e-mail, else by their first one
    (RFC 7644 §3.4.2.3), never by their smallest one."""
    # created in the reverse of the expected order; x2's non-primary address sorts first of all,
    # and x4's second address (it has no primary) would sort before everyone else's
    for name, emails in [
        ("x4", [{"value": "e@x.example"}, {"value": "0@x.example"}]),
        ("x2", [{"value": "a@x.example"}, {"value": "c@x.example", "primary": True}]),
        ("x1", [{"value": "b@x.example", "primary": True}, {"value": "z@x.example"}]),
        ("x3", [{"value": "d@x.example"}]),
    ]:
        scim.post("Users", json={"userName": name, "emails": emails})
    for order, expected in [
        ("ascending", ["x1", "x2", "x3", "x4"]),
        ("descending", ["x4", "x3", "x2", "x1"]),
    ]:
        page = scim.get("Users", query_string={"sortBy": "emails.value", "sortOrder": order}).json
        assert [r["userName"] for r in page["Resources"]] == expected, order


def test_sorting_by_a_multi_valued_attribute_ignores_case(scim):
    """e-mail values and localities are not caseExact: they sort as their lower-cased text, so
    "B@..." comes between "a@..." and "c@..." (in code points every capital sorts first)."""
    for name, mail, town in [("y1", "c@x.example", "cork"), ("y2", "B@x.example", "Bath")]:
        scim.post(
            "Users",
            json={"userName": name, "emails": [{"value": mail}], "addresses": [{"locality": town}]},
        )
    scim.post(
        "Users",
        json={
            "userName": "y3",
            "emails": [{"value": "a@x.example"}],
            "addresses": [{"locality": "athens"}],
        },
    )
    for sort_by in ("emails.value", "addresses.locality"):
        page = scim.get("Users", query_string={"sortBy": sort_by}).json
        assert [r["userName"] for r in page["Resources"]] == ["y3", "y2", "y1"], sort_by


def test_sorting_by_group_uses_the_first_group_the_user_shows(scim):
    """sortBy groups.value orders users by the first group of their `groups` (RFC 7644
    §3.4.2.3), which lists groups by name: not by the smallest group id."""
    users = {n: scim.post("Users", json={"userName": n}).json["id"] for n in ("g1", "g2", "g3")}
    ids = sorted(scim.post("Groups", json={"displayName": f"t{i}"}).json["id"] for i in range(3))
    # name order is the reverse of id order
    by_name = dict(zip(["Gamma", "Beta", "Alpha"], ids, strict=True))
    for name, members in [("Alpha", ["g1"]), ("Beta", ["g2", "g1"]), ("Gamma", ["g3", "g2"])]:
        body = {"displayName": name, "members": [{"value": users[m]} for m in members]}
        assert scim.put(f"Groups/{by_name[name]}", json=body).status_code == 200
    firsts = {n: scim.get(f"Users/{i}").json["groups"][0]["display"] for n, i in users.items()}
    assert firsts == {"g1": "Alpha", "g2": "Beta", "g3": "Gamma"}
    page = scim.get("Users", query_string={"sortBy": "groups.value"}).json
    # first groups' ids: g3's Gamma < g2's Beta < g1's Alpha; the smallest ids would tie g2, g3
    assert [r["userName"] for r in page["Resources"]] == ["g3", "g2", "g1"]


@pytest.mark.parametrize(
    "sort_by",
    [
        "nosuch",
        "meta.resourceType",
        "schemas",
        'emails[type eq "work"].value',
        "userName.x",
        "emails.nosuch",
        CORE,  # a schema, not an attribute
    ],
)
def test_bad_sort_is_400(scim, people, sort_by):
    """An unknown or unsortable sort attribute, or an unknown order, is a 400 naming it."""
    body = scim_error(scim.get("Users", query_string={"sortBy": sort_by}), 400, "invalidFilter")
    assert body["detail"].startswith(f"cannot sort by {sort_by!r}"), body  # not "filtered on"
    scim_error(
        scim.get("Users", query_string={"sortBy": "userName", "sortOrder": "sideways"}),
        400,
        "invalidValue",
    )


def test_attributes_projection(scim, people):
    """attributes= returns only those (plus id and schemas); excludedAttributes= drops them."""
    doc = scim.get(
        "Users",
        query_string={
            "filter": 'userName eq "alice@example.com"',
            "attributes": f"userName,name.givenName,{ENT}:department",
        },
    ).json["Resources"][0]
    assert set(doc) == {"id", "schemas", "userName", "name", ENT}
    assert doc["name"] == {"givenName": "Alice"} and doc[ENT] == {"department": "R&D"}
    doc = scim.get(
        f"Users/{people['alice@example.com']}", query_string={"excludedAttributes": "emails,name"}
    ).json
    assert "emails" not in doc and "name" not in doc and doc["userName"] == "alice@example.com"
    doc = scim.get(
        f"Users/{people['alice@example.com']}", query_string={"attributes": "emails.value"}
    ).json
    assert doc["emails"] == [{"value": "alice@example.com"}, {"value": "alice@home.example"}]


def test_search_endpoints(scim, people):
    """POST /Users/.search and /.search take a SearchRequest body like the GET parameters."""
    body = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
        "filter": 'title sw "eng"',
        "attributes": ["userName"],
        "sortBy": "userName",
        "startIndex": 1,
        "count": 10,
    }
    page = scim.post("Users/.search", json=body).json
    assert [r["userName"] for r in page["Resources"]] == ["alice@example.com", "Bob@Example.com"]
    scim.post("Groups", json={"displayName": "Engineers"})
    both = scim.post(
        ".search", json={**body, "filter": 'title sw "eng" or displayName sw "eng"'}
    ).json
    assert both["totalResults"] == 3
    assert [r["schemas"][0].rsplit(":", 1)[1] for r in both["Resources"]] == [
        "User",
        "User",
        "Group",
    ]
    scim_error(scim.post("Users/.search", json={"schemas": ["urn:wrong"]}), 400, "invalidSyntax")


def test_not_around_a_boolean_finds_users_without_the_value(scim):
    """Comparisons are two-valued: a user whose `active` was removed (it reads back absent)
    fails both `active eq true` and `active ne true`, so `not (...)` of either finds them."""
    for name, active in [("on", True), ("off", False), ("unset", True)]:
        scim.post("Users", json={"userName": name, "active": active})
    unset = scim.get("Users", query_string={"filter": 'userName eq "unset"'}).json["Resources"][0]
    op = {"op": "remove", "path": "active"}
    body = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [op]}
    assert "active" not in scim.patch(f"Users/{unset['id']}", json=body).json
    assert found(scim, "active eq true") == ["on"]
    assert found(scim, "active ne true") == ["off"]
    assert found(scim, "not (active eq true)") == ["off", "unset"]
    assert found(scim, "not (active ne true)") == ["on", "unset"]
    assert found(scim, "not (active ne false)") == ["off", "unset"]


def test_filter_on_the_display_of_emails_and_phone_numbers(scim):
    """An e-mail's or phone number's `display` can be filtered on, ignoring case: the filter
    finds the user showing that display, never one whose value (or other attribute) holds it."""
    scim.post(
        "Users",
        json={
            "userName": "d1",
            "emails": [{"value": "d1@x.example", "display": "Work Mail"}],
            "phoneNumbers": [{"value": "+1 555 0100", "display": "Desk"}],
        },
    )
    scim.post(
        "Users",
        json={
            "userName": "d2",
            "emails": [{"value": "d2@x.example"}, {"value": "d2b@x.example", "display": "Private"}],
        },
    )
    scim.post(
        "Users",
        json={
            "userName": "d3",
            "displayName": "Work Mail",
            "emails": [{"value": "work@x.example", "type": "work"}],
            "phoneNumbers": [{"value": "desk"}],
        },
    )
    assert found(scim, 'emails.display eq "work mail"') == ["d1"]
    assert found(scim, 'emails[display sw "PRIV"]') == ["d2"]
    assert found(scim, "emails.display pr") == ["d1", "d2"]
    assert found(scim, "emails.display eq null") == ["d3"]
    assert found(scim, 'emails[type eq "work" or display eq "private"]') == ["d2", "d3"]
    assert found(scim, 'phoneNumbers.display eq "desk"') == ["d1"]
    assert found(scim, 'phoneNumbers[display co "es"]') == ["d1"]
