"""The issue's story in a real browser: users pushed over SCIM, an admin finds one, grants a
folder by hand and sees it with provenance `manual`, and reads why the user has what they have."""

import json
import urllib.request

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from bridge import accounts

ENT = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"


def push_user(live, slug, user_name, department):
    """What an IdP does: POST the user to the SCIM endpoint over HTTP."""
    token = accounts.issue_token(live["store"], slug, label="idp", actor="test").raw
    body = json.dumps(
        {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": user_name,
            ENT: {"department": department},
        }
    ).encode()
    request = urllib.request.Request(  # noqa: S310 - the test's own loopback server
        f"{live['base_url']}/scim/v2/Users",
        data=body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        assert response.status == 201


def access_rows(console):
    return {
        (
            r.get_attribute("data-what"),
            r.get_attribute("data-value"),
            r.get_attribute("data-provenance"),
        )
        for r in console.browser.find_elements(By.CSS_SELECTOR, "tr[data-what]")
    }


def test_find_a_user_grant_a_folder_by_hand_and_see_why(console):
    push_user(console.live, console.slug, "mia@example.com", "Marketing")
    console.sign_in_with_dev_idp("ann@example.com", "admins")
    console.click("Users")
    console.fill("Search", "mia")
    console.click("Filter")
    console.shot("users")
    console.click("mia@example.com")
    assert console.heading() == "mia@example.com"
    assert ("grant", "production:folder:marketing/:editor", "policy:marketing") in access_rows(
        console
    )
    assert "policy rule 'marketing'" in console.text()

    Select(console.browser.find_element(By.ID, "g-env")).select_by_visible_text("staging")
    console.fill("Path", "campaigns/")
    Select(console.browser.find_element(By.ID, "g-level")).select_by_visible_text("contributor")
    console.click("Add grant")
    assert "Grant added by hand." in console.text()
    assert ("grant", "staging:folder:campaigns/:contributor", "manual") in access_rows(console)
    console.shot("user")
