"""The Groups and SCIM screens in a real browser: an admin makes a group by hand, puts a user
pushed over SCIM in it, gives the group a folder and sees the user hold it through the group;
the SCIM screen lists the request that pushed the user."""

from selenium.webdriver.common.by import By

from tests.browser.test_console_access import push_user


def test_an_admin_makes_a_group_fills_it_and_grants_it_a_folder(console):
    push_user(console.live, console.slug, "mia@example.com", "Sales")
    console.sign_in_with_dev_idp("ann@example.com", "admins")
    console.click("Groups")
    assert console.heading() == "Groups"
    console.fill("Group name", "Campaigns")
    console.click("Make group")
    assert console.heading() == "Campaigns" and "Group made." in console.text()
    console.fill("userName", "mia@example.com")
    console.click("Add member")
    member = console.browser.find_element(By.CSS_SELECTOR, 'tr[data-member="mia@example.com"]')
    assert member.get_attribute("data-provenance") == "manual"
    console.fill("Path", "campaigns/")
    console.click("Add grant")
    grant = console.browser.find_element(By.CSS_SELECTOR, "tr[data-grant]")
    assert grant.get_attribute("data-grant") == "production:folder:campaigns/:viewer"
    assert grant.get_attribute("data-provenance") == "manual"
    console.browser.execute_script("window.scrollTo(0, 0)")
    console.shot("group")
    console.phone_shot("group-phone")
    console.click("mia@example.com")
    held = console.browser.find_element(
        By.CSS_SELECTOR, 'tr[data-value="production:folder:campaigns/:viewer"]'
    )
    assert held.get_attribute("data-provenance") == "group:Campaigns"
    console.click("Groups")
    assert "Campaigns" in console.text() and "manual" in console.text()
    console.shot("groups")


def test_the_scim_screen_shows_the_requests_the_idp_made(console):
    """The user pushed over SCIM shows as a request with its status next to the tokens."""
    push_user(console.live, console.slug, "mia@example.com", "Sales")
    console.sign_in_with_dev_idp("ann@example.com", "admins")
    console.click("SCIM")
    (row,) = console.browser.find_elements(By.CSS_SELECTOR, "tr[data-request]")
    assert row.get_attribute("data-request") == "POST /scim/v2/Users"
    assert row.get_attribute("data-status") == "201"
    console.shot("scim-requests")
