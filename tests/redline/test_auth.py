import pytest
from django.urls import reverse

from tests.factories import PASSWORD, UserFactory


@pytest.mark.django_db
def test_login_page_logs_a_user_in_and_lands_on_projects(client):
    UserFactory(username="erin")
    response = client.post(
        reverse("login"), {"username": "erin", "password": PASSWORD}, follow=True
    )
    assert response.redirect_chain[-1][0] == reverse("curation:project_list")
    assert b"Your projects" in response.content


@pytest.mark.django_db
def test_login_with_a_wrong_password_says_so(client):
    UserFactory(username="erin")
    response = client.post(reverse("login"), {"username": "erin", "password": "nope"})
    assert response.status_code == 200
    assert b"did not match" in response.content


@pytest.mark.django_db
def test_logout_is_a_post_and_ends_the_session(client):
    user = UserFactory()
    client.force_login(user)
    assert client.get(reverse("logout")).status_code == 405
    response = client.post(reverse("logout"))
    assert response.status_code == 302
    assert client.get(reverse("curation:project_list")).status_code == 302


@pytest.mark.django_db
def test_login_form_enforces_csrf():
    from django.test import Client

    UserFactory(username="erin")
    c = Client(enforce_csrf_checks=True)
    response = c.post(reverse("login"), {"username": "erin", "password": PASSWORD})
    assert response.status_code == 403


@pytest.mark.django_db
def test_anonymous_users_are_sent_to_login(client):
    response = client.get(reverse("curation:project_list"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


@pytest.mark.django_db
def test_token_endpoint_trades_credentials_for_a_working_token(client):
    from rest_framework.test import APIClient

    UserFactory(username="erin")
    api = APIClient()
    response = api.post("/api/v1/auth/token/", {"username": "erin", "password": PASSWORD})
    assert response.status_code == 200
    token = response.json()["token"]
    api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert api.get("/api/v1/projects/").status_code == 200


@pytest.mark.django_db
def test_token_endpoint_refuses_bad_credentials_and_api_refuses_no_token():
    from rest_framework.test import APIClient

    UserFactory(username="erin")
    api = APIClient()
    assert api.post("/api/v1/auth/token/", {"username": "erin", "password": "x"}).status_code == 400
    assert api.get("/api/v1/projects/").status_code == 401
    api.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    assert api.get("/api/v1/projects/").status_code == 401
