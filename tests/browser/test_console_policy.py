"""The policy half of the issue's story in a real browser: an admin edits the policy, reads the
plan (who gains what), applies it, sees a user's access change, and rolls back."""

from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions

from tests.browser.test_console_access import push_user

CAMPAIGNS = """
  - name: campaigns
    when: {department: {equals: Marketing}}
    then:
      grants:
        - {environment: staging, folder: "campaigns/", level: viewer}
"""


def _confirm_and_wait(console, text):
    """Press a button that asks for confirmation (console.js), say yes, wait for the page."""
    page = console.browser.find_element(By.TAG_NAME, "html")
    console.browser.find_element(By.XPATH, f"//button[normalize-space()='{text}']").click()
    console.wait.until(expected_conditions.alert_is_present())
    console.browser.switch_to.alert.accept()
    console.wait_gone(page)


def _campaign_grant(console):
    return console.browser.find_elements(
        By.CSS_SELECTOR, 'tr[data-value="staging:folder:campaigns/:viewer"]'
    )


def test_edit_plan_apply_see_the_change_and_roll_back(console):
    push_user(console.live, console.slug, "mia@example.com", "Marketing")
    console.sign_in_with_dev_idp("ann@example.com", "admins")
    console.click("Policy")
    assert console.heading() == "Policy" and "No version is stored yet" in console.text()
    console.click("Check and plan")  # the file as it is becomes version 1
    assert "Nobody's access would change." in console.text()
    _confirm_and_wait(console, "Apply this policy")
    assert "Version 1 is active" in console.text()

    editor = console.browser.find_element(By.ID, "policy-source")
    editor.send_keys("  - name: broken\n    whenn: {}\n")
    console.click("Check and plan")
    errors = console.browser.find_element(By.ID, "policy-errors").text
    assert "does not load" in errors and f"{console.slug}.yaml:" in errors
    console.shot("policy-errors")

    editor = console.browser.find_element(By.ID, "policy-source")
    source = editor.get_attribute("value").replace("  - name: broken\n    whenn: {}\n", "")
    editor.clear()
    editor.send_keys(source.rstrip("\n") + CAMPAIGNS)
    console.click("Check and plan")
    row = console.browser.find_element(By.CSS_SELECTOR, 'tr[data-user="mia@example.com"]')
    assert "+ grants: staging:folder:campaigns/:viewer" in row.text
    console.shot("policy-plan")
    _confirm_and_wait(console, "Apply this policy")
    assert "Version 2 is active" in console.text()
    console.shot("policy")
    console.phone_shot("policy-phone")

    console.click("Users")
    console.click("mia@example.com")
    (held,) = _campaign_grant(console)
    assert held.get_attribute("data-provenance") == "policy:campaigns"

    console.click("Policy")
    console.click("Changes from 1")
    assert "+  - name: campaigns" in console.browser.find_element(By.ID, "diff-lines").text
    console.open("policy/versions/1")
    console.click("Plan it")
    row = console.browser.find_element(By.CSS_SELECTOR, 'tr[data-user="mia@example.com"]')
    assert "\N{MINUS SIGN} grants: staging:folder:campaigns/:viewer" in row.text
    console.shot("policy-rollback")
    _confirm_and_wait(console, "Make version 1 active")
    assert "Version 1 is active" in console.text()
    console.click("Users")
    console.click("mia@example.com")
    assert _campaign_grant(console) == []


def test_the_editor_shows_errors_while_typing(console):
    """Typing a mistake lists it under the editor with its line, without pressing anything;
    fixing it says the policy loads."""
    console.sign_in_with_dev_idp("ann@example.com", "admins")
    console.click("Policy")
    editor = console.browser.find_element(By.ID, "policy-source")
    live = console.browser.find_element(By.ID, "policy-live")
    editor.send_keys("  - name: broken\n    whenn: {}\n")
    console.wait.until(lambda b: "unknown key 'whenn'" in live.text)
    assert f"{console.slug}.yaml:" in live.text and "|     whenn: {}" in live.text
    assert editor.get_attribute("aria-invalid") == "true"
    for _ in range(len("  - name: broken\n    whenn: {}\n")):
        editor.send_keys("\ue003")  # backspace
    console.wait.until(lambda b: live.text.startswith("Loads: 2 rules"))
    assert editor.get_attribute("aria-invalid") is None
    assert console.heading() == "Policy"  # still the editor: nothing was submitted
