"""Persona matrix for project pages and endpoints: expert, manager, admin, outsider."""

import pytest
from django.urls import reverse

from curation.models import Membership, Project

pytestmark = pytest.mark.django_db


# ---- HTML pages ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("persona", "status"),
    [("expert", 200), ("manager", 200), ("admin", 200), ("outsider", 404)],
)
def test_project_page_by_persona(personas, project, client_for, persona, status):
    response = client_for(personas[persona]).get(
        reverse("curation:project_detail", args=[project.slug])
    )
    assert response.status_code == status


def test_project_page_shows_members_only_to_managers_and_admins(personas, project, client_for):
    url = reverse("curation:project_detail", args=[project.slug])
    assert b"Members" not in client_for(personas["expert"]).get(url).content
    assert b"mona-manager" in client_for(personas["manager"]).get(url).content
    assert b"mona-manager" in client_for(personas["admin"]).get(url).content


def test_projects_page_lists_my_projects_with_my_role(personas, project, client_for):
    content = client_for(personas["expert"]).get(reverse("curation:project_list")).content
    assert project.name.encode() in content
    assert b"role-expert" in content
    outsider_content = (
        client_for(personas["outsider"]).get(reverse("curation:project_list")).content
    )
    assert project.name.encode() not in outsider_content


def test_projects_page_queries_are_bounded(personas, client_for, django_assert_max_num_queries):
    from tests.factories import ProjectFactory, membership_add

    for _ in range(15):
        membership_add(ProjectFactory(), personas["expert"], "expert")
    c = client_for(personas["expert"])
    with django_assert_max_num_queries(4):
        assert c.get(reverse("curation:project_list")).status_code == 200


@pytest.mark.parametrize(
    ("persona", "status"),
    [("expert", 403), ("manager", 200), ("admin", 200), ("outsider", 404)],
)
def test_member_add_page_by_persona(personas, project, client_for, persona, status):
    url = reverse("curation:project_member_add", args=[project.slug])
    response = client_for(personas[persona]).post(
        url, {"username": "oscar-outsider", "role": "expert"}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == status
    added = Membership.objects.filter(project=project, user__username="oscar-outsider").exists()
    assert added is (status == 200)


def test_member_add_page_rejects_get_and_enforces_csrf(personas, project, client_for):
    url = reverse("curation:project_member_add", args=[project.slug])
    assert client_for(personas["manager"]).get(url).status_code == 405
    c = client_for(personas["manager"], enforce_csrf=True)
    assert c.post(url, {"username": "oscar-outsider", "role": "expert"}).status_code == 403


def test_member_add_form_reports_an_unknown_user(personas, project, client_for):
    url = reverse("curation:project_member_add", args=[project.slug])
    response = client_for(personas["manager"]).post(
        url, {"username": "ghost", "role": "expert"}, HTTP_HX_REQUEST="true"
    )
    assert b"No user named &#x27;ghost&#x27;" in response.content


# ---- API ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("persona", "status"),
    [("expert", 200), ("manager", 200), ("admin", 200), ("outsider", 404)],
)
def test_project_api_detail_by_persona(personas, project, api_for, persona, status):
    response = api_for(personas[persona]).get(f"/api/v1/projects/{project.slug}/")
    assert response.status_code == status
    if status == 200:
        body = response.json()
        assert body["slug"] == project.slug
        assert body["role"] == ("admin" if persona == "admin" else persona)


def test_project_api_list_shows_only_my_projects(personas, project, api_for):
    slugs = [
        p["slug"] for p in api_for(personas["expert"]).get("/api/v1/projects/").json()["results"]
    ]
    assert slugs == [project.slug]
    admin_slugs = [
        p["slug"] for p in api_for(personas["admin"]).get("/api/v1/projects/").json()["results"]
    ]
    assert set(admin_slugs) == set(Project.objects.values_list("slug", flat=True))


@pytest.mark.parametrize(
    ("persona", "status"),
    [("expert", 403), ("manager", 403), ("outsider", 403), ("admin", 201)],
)
def test_only_admins_create_projects(personas, api_for, persona, status):
    response = api_for(personas[persona]).post(
        "/api/v1/projects/", {"name": "Contract clauses", "description": "Legal QA"}, format="json"
    )
    assert response.status_code == status
    if status == 201:
        assert response.json()["slug"] == "contract-clauses"
        assert Project.objects.get(slug="contract-clauses").created_by == personas["admin"]


def test_project_create_refuses_a_taken_slug_naming_the_field(personas, project, api_for):
    response = api_for(personas["admin"]).post(
        "/api/v1/projects/", {"name": "Again", "slug": project.slug}, format="json"
    )
    assert response.status_code == 400
    assert "already exists" in response.json()["slug"][0]


@pytest.mark.parametrize(
    ("persona", "status"),
    [("expert", 403), ("manager", 201), ("admin", 201), ("outsider", 404)],
)
def test_members_api_by_persona(personas, project, api_for, persona, status):
    response = api_for(personas[persona]).post(
        f"/api/v1/projects/{project.slug}/members/",
        {"username": "oscar-outsider", "role": "expert"},
        format="json",
    )
    assert response.status_code == status


def test_members_api_changes_an_existing_role_and_validates_input(personas, project, api_for):
    api = api_for(personas["manager"])
    url = f"/api/v1/projects/{project.slug}/members/"
    response = api.post(url, {"username": "erin-expert", "role": "manager"}, format="json")
    assert response.status_code == 200
    assert Membership.objects.get(project=project, user=personas["expert"]).role == "manager"
    bad_role = api.post(url, {"username": "erin-expert", "role": "owner"}, format="json")
    assert bad_role.status_code == 400 and "role" in bad_role.json()
    unknown = api.post(url, {"username": "ghost", "role": "expert"}, format="json")
    assert unknown.status_code == 400 and "No user named 'ghost'" in unknown.json()["username"][0]
    members = api.get(url).json()
    assert {m["username"] for m in members} == {"erin-expert", "mona-manager"}


def test_members_api_enforces_csrf_for_session_auth(personas, project):
    from rest_framework.test import APIClient

    api = APIClient(enforce_csrf_checks=True)
    api.force_login(personas["manager"])
    response = api.post(
        f"/api/v1/projects/{project.slug}/members/",
        {"username": "oscar-outsider", "role": "expert"},
        format="json",
    )
    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]


def test_members_api_rejects_wrong_method(personas, project, api_for):
    response = api_for(personas["manager"]).delete(f"/api/v1/projects/{project.slug}/members/")
    assert response.status_code == 405
