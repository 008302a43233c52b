"""The admin console in a real browser: sign in through the dev IdP as an admin, use the
screens, a non-admin refused, a form posted without its CSRF token refused."""

from selenium.webdriver.common.by import By
from sqlalchemy import func, select

from bridge.models import ScimToken


def _tokens(store):
    with store.read() as db:
        return db.scalar(select(func.count()).select_from(ScimToken))


def test_an_admin_signs_in_through_the_dev_idp_and_walks_the_screens(console):
    """Overview, IdP connection, SCIM (issue a token shown once), logins, audit (verify)."""
    console.sign_in_with_dev_idp("ann@example.com", "admins")
    assert console.heading() == "Overview"
    assert "ann@example.com" in console.text() and "admin" in console.text()
    assert "dev: signing certificate expires" in console.text()
    console.shot("overview")
    console.phone_shot("overview-phone")

    console.click("IdP connection")
    assert console.heading() == "IdP connection"
    assert "Reply URL (Assertion Consumer Service URL)" in console.text()
    assert f"{console.live['base_url']}/saml/{console.slug}/acs" in console.text()
    console.shot("idp-connection")

    console.click("SCIM")
    console.fill("Label", "okta")
    console.click("Issue a token")
    token = console.browser.find_element(By.ID, "new-token").text
    assert token.startswith("ibs_") and "shown only once" in console.text()
    console.shot("scim-token-issued")
    console.click("SCIM")
    assert token not in console.browser.page_source

    console.click("Logins")
    assert "signed in" in console.text() and "ann@example.com" in console.text()
    console.shot("logins")

    console.click("Audit")
    console.click("Verify the chain")
    assert "The chain holds" in console.text()
    assert "console:ann@example.com" in console.text()  # the token issue, signed by the person
    console.shot("audit")


def test_a_person_who_is_not_an_admin_sees_a_clear_refusal(console):
    console.sign_in_with_dev_idp("bob@example.com", "staff")
    assert console.heading() == "This console is for the account's admins"
    assert "bob@example.com has the role media_library_user" in console.text()
    console.shot("not-an-admin")
    console.click("Sign out and sign in as someone else")
    assert console.heading().startswith("Sign in to the Acme Media console")


def test_a_form_posted_without_its_csrf_token_is_refused(console):
    """A form like the page's own, minus the token (as another site would post it): refused."""
    console.sign_in_with_dev_idp("ann@example.com", "admins")
    before = _tokens(console.live["store"])
    console.open("scim")
    console.browser.execute_script(
        "const f = document.createElement('form'); f.method = 'post';"
        "f.action = arguments[0]; const i = document.createElement('input');"
        "i.name = 'label'; i.value = 'forged'; f.appendChild(i);"
        "document.body.appendChild(f); f.submit();",
        console.url("scim/tokens"),
    )
    console.wait.until(lambda b: "Form refused" in b.title)
    assert "Nothing was changed" in console.text()
    assert _tokens(console.live["store"]) == before
