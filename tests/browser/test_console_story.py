"""Issue 13's "done when", in a real browser, by an IT admin who starts with nothing but a
one-time sign-in link: connect the dev IdP from its metadata file, run a test login, get a SCIM
token and push people with it, write a policy, plan and apply it, and answer "why does Mia have
editor on marketing/" without leaving the browser."""

import json
import secrets
import urllib.request

from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions

from bridge import accounts, admins, manual, provisioning
from tests import factories
from tests.console_support import POLICY

ENT = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"


def _push(base_url, token, user_name, department):
    body = json.dumps(
        {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": user_name,
            ENT: {"department": department},
        }
    ).encode()
    request = urllib.request.Request(  # noqa: S310 - the test's own loopback server
        f"{base_url}/scim/v2/Users",
        data=body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        assert response.status == 201


def _confirm_and_wait(console, text):
    page = console.browser.find_element(By.TAG_NAME, "html")
    console.browser.find_element(By.XPATH, f"//button[normalize-space()='{text}']").click()
    console.wait.until(expected_conditions.alert_is_present())
    console.browser.switch_to.alert.accept()
    console.wait_gone(page)


def test_from_a_one_time_link_to_why_mia_has_editor_on_marketing(
    browser, live, screenshots, tmp_path
):
    from tests.browser.conftest import Console

    store = live["store"]
    slug = f"story-{secrets.token_hex(3)}"
    accounts.create_account(store, slug, name="Acme Media", actor="test")
    accounts.add_environment(store, slug, "production", default=True, actor="test")
    accounts.add_environment(store, slug, "staging", actor="test")
    account_id = manual.account_by_slug(store, slug)
    ann = provisioning.provision(
        store, account_id, factories.profile(user_name="ann@example.com"), actor="cli"
    ).user_id
    manual.set_role(store, account_id, ann, "master_admin", actor="cli")
    link = admins.issue_link(store, slug, "ann@example.com", actor="cli")
    console = Console(browser, live, slug, screenshots)
    browser.delete_all_cookies()

    console.browser.get(f"{live['base_url']}/console/{slug}/link/{link.raw}")
    console.click("Sign in as ann@example.com")
    assert console.heading() == "Overview" and "No IdP connected yet" in console.text()

    console.click("IdP connection")
    metadata = tmp_path / "dev-idp-metadata.xml"
    metadata.write_text(live["idp_metadata"])
    console.fill("Name (letters, digits, hyphens; e.g. okta)", "dev")
    console.browser.find_element(By.ID, "idp-file").send_keys(str(metadata))
    console.click("Add IdP")
    assert "IdP dev added." in console.text()

    console.click("Test login")
    console.click("Continue to dev")
    console.wait.until(expected_conditions.url_contains(live["idp_url"]))
    for name, value in (("user_name", "ann@example.com"), ("groups", "admins"), ("department", "")):
        field = console.browser.find_element(By.NAME, name)
        field.clear()
        field.send_keys(value)
    console.browser.find_element(By.XPATH, "//button[normalize-space()='Sign in']").click()
    console.wait.until(lambda b: "Test login: what dev sent" in b.page_source)
    assert "sign in the existing user ann@example.com" in " ".join(console.text().split())
    console.click("Back to the IdP connection")

    console.click("SCIM")
    console.fill("Label", "dev-idp")
    console.click("Issue a token")
    token = console.browser.find_element(By.ID, "new-token").text
    _push(live["base_url"], token, "mia@example.com", "Marketing")
    _push(live["base_url"], token, "sam@example.com", "Sales")
    console.click("SCIM")
    statuses = [
        r.get_attribute("data-status")
        for r in console.browser.find_elements(By.CSS_SELECTOR, "tr[data-request]")
    ]
    assert statuses == ["201", "201"]

    console.click("Policy")
    editor = console.browser.find_element(By.ID, "policy-source")
    editor.clear()
    editor.send_keys(POLICY.format(slug=slug))
    console.click("Check and plan")
    mia = console.browser.find_element(By.CSS_SELECTOR, 'tr[data-user="mia@example.com"]')
    assert "+ grants: production:folder:marketing/:editor" in mia.text
    _confirm_and_wait(console, "Apply this policy")
    assert "Version 1 is active" in console.text()

    console.click("Users")
    console.fill("Search", "mia")
    console.click("Filter")
    console.click("mia@example.com")
    row = console.browser.find_element(
        By.CSS_SELECTOR, 'tr[data-value="production:folder:marketing/:editor"]'
    )
    assert row.get_attribute("data-provenance") == "policy:marketing"
    assert "policy rule 'marketing'" in row.text
    why = console.browser.find_element(By.ID, "h-why").find_element(By.XPATH, "..").text
    assert "marketing" in why and "Marketing" in why
    console.shot("story-why")
