"""The staff console's front page names each section once, and leads to the staff pages that
live outside the admin, for staff allowed to see them."""

from collections import Counter

from django.contrib import admin
from django.contrib.auth.models import Permission
from django.test import RequestFactory
from django.urls import reverse

from accounts.models import User
from tests.conftest import make_user, staff_client_for


def staff_with(email, *names):
    user = make_user(email)
    User.objects.filter(pk=user.pk).update(is_staff=True)
    user.refresh_from_db()
    perms = [
        Permission.objects.get(content_type__app_label=label, codename=codename)
        for label, codename in (name.split(".") for name in names)
    ]
    user.user_permissions.set(perms)
    return user


def test_no_two_sections_of_the_admin_share_a_name(charlie):
    request = RequestFactory().get("/admin/")
    request.user = charlie
    names = Counter(app["name"] for app in admin.site.get_app_list(request))
    assert [name for name, count in names.items() if count > 1] == []
    assert {"Users", "Billing", "Sign-in: email addresses", "Sign-in: two-factor"} <= set(names)


def test_the_index_shows_the_sections_by_their_names(staff_client):
    html = staff_client.get(reverse("admin:index")).content.decode()
    # "Accounts" named three things once: our users, allauth's emails and billing's balances.
    assert ">Accounts<" not in html
    assert ">Users<" in html and ">Sign-in: email addresses<" in html and ">Balances<" in html


def test_the_index_and_header_link_the_platform_page(staff_client):
    html = staff_client.get(reverse("admin:index")).content.decode()
    platform = reverse("logs:staff")
    assert html.count(f'href="{platform}"') == 3  # the header's links, and the staff pages
    page = staff_client.get(reverse("admin:billing_rechargeorder_changelist")).content.decode()
    assert f'href="{platform}"' in page


def test_staff_without_the_platform_permission_get_no_link(db):
    clerk = staff_with("clerk@example.com", "support.view_ticket")
    client = staff_client_for(clerk)
    html = client.get(reverse("admin:index")).content.decode()
    assert "Support" in html
    assert reverse("logs:staff") not in html


def test_staff_with_only_the_platform_permission_get_the_link(db):
    ops = staff_with("ops@example.com", "logs.view_platform")
    html = staff_client_for(ops).get(reverse("admin:index")).content.decode()
    assert html.count(f'href="{reverse("logs:staff")}"') == 3
