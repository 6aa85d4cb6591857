"""A person logs in, sees their projects, adds a member with htmx, and logs out."""

import re

import pytest

from curation.models import Membership
from tests.factories import PASSWORD, UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_manager_logs_in_sees_project_adds_member_and_logs_out(page, personas, project):
    UserFactory(username="new-expert")
    page.goto("/")
    assert page.url.endswith("/accounts/login/?next=/projects/")
    page.get_by_label("Username").fill("mona-manager")
    page.get_by_label("Password").fill(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"^[^?]*/projects/$"))
    assert page.get_by_role("link", name=project.name).is_visible()
    assert page.locator(".role-manager").first.inner_text() == "manager"

    page.get_by_role("link", name=project.name).click()
    page.get_by_label("Username").fill("new-expert")
    page.get_by_role("button", name="Add or change role").click()
    page.get_by_text("new-expert added as expert.").wait_for()
    # htmx swapped the table in place: no full page load happened
    assert page.url.endswith(f"/projects/{project.slug}/")
    assert Membership.objects.filter(project=project, user__username="new-expert").exists()

    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(re.compile(r"^[^?]*/accounts/login/$"))
    page.goto("/projects/")
    assert "/accounts/login/" in page.url


def test_wrong_password_shows_an_error(page, personas):
    page.goto("/accounts/login/")
    page.get_by_label("Username").fill("erin-expert")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Log in").click()
    assert page.get_by_role("alert").inner_text().startswith("That username and password")
