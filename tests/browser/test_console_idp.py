"""The IdP screen's test login in a real browser, through the dev IdP: what the IdP sent and
what the policy would decide are shown, nobody is created, and the admin's session is theirs."""

from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from sqlalchemy import select

from bridge.models import LoginSession, User


def _users(store, slug):
    with store.read() as db:
        from bridge.models import Account

        account = db.scalars(select(Account).where(Account.slug == slug)).one()
        return set(db.scalars(select(User.user_name).where(User.account_id == account.id)))


def _sessions(store):
    with store.read() as db:
        return set(db.scalars(select(LoginSession.id).where(LoginSession.ended.is_(None))))


def test_an_admin_runs_a_test_login_that_signs_nobody_in(console):
    console.sign_in_with_dev_idp("ann@example.com", "admins")
    store = console.live["store"]
    sessions_before = _sessions(store)
    console.click("IdP connection")
    console.click("Test login")
    assert console.heading() == "Test login with dev"
    console.click("Continue to dev")
    console.wait.until(expected_conditions.url_contains(console.live["idp_url"]))
    for name, value in (
        ("user_name", "tess@example.com"),
        ("groups", "staff"),
        ("department", "Marketing"),
    ):
        field = console.browser.find_element(By.NAME, name)
        field.clear()
        field.send_keys(value)
    console.browser.find_element(By.XPATH, "//button[normalize-space()='Sign in']").click()
    console.wait.until(lambda b: "Test login: what dev sent" in b.page_source)
    text = console.text()
    assert "nobody was signed in, nobody was created or changed" in text
    assert console.browser.find_element(By.ID, "name-id").text == "tess@example.com"
    assert "create the user tess@example.com (just-in-time)" in " ".join(text.split())
    decision = console.browser.find_element(By.ID, "decision").text
    assert "media_library_user" in decision and "production, staging" in decision
    assert "marketing/" in console.browser.find_element(By.ID, "grants").text
    console.shot("idp-test-login")
    assert "tess@example.com" not in _users(store, console.slug)
    assert _sessions(store) == sessions_before  # no session opened for anyone
    console.click("Back to the IdP connection")
    assert console.heading() == "IdP connection"  # still the admin, in their own session
    console.click("Logins")
    assert "test login" in console.text() and "tess@example.com" in console.text()
