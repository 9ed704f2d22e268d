import re

import pytest
from django.urls import reverse

HELP_TOPICS = [
    "getting-started",
    "base-url",
    "images",
    "errors",
    "pricing",
    "worked-example",
    "price-adjustments",
    "lines",
    "bonuses",
    "recharge-delays",
    "concurrency",
    "failover",
    "maintenance",
    "waf-403",
    "privacy",
    "abnormal-charges",
    "token-quota",
    "invalid-token",
    "token-form",
    "insufficient-balance",
    "ip-allowlist",
    "unknown-model",
]


def test_it_redirects_anonymous_visitors_from_the_console_pages_to_login(client, db):
    response = client.get(reverse("console:profile"))
    assert response.status_code == 302
    assert response.url.startswith(reverse("account_login"))


def test_the_help_center_is_public_and_answers_every_topic(client, db):
    response = client.get(reverse("console:help"))
    assert response.status_code == 200
    html = response.content.decode()
    for topic in HELP_TOPICS:
        assert f'id="{topic}"' in html, topic
        assert f'href="#{topic}"' in html or topic in {
            "worked-example",
            "insufficient-balance",
            "ip-allowlist",
            "unknown-model",
        }


def test_the_help_center_shows_the_sites_own_base_url(client, db, settings):
    html = client.get(reverse("console:help")).content.decode()
    assert f"{settings.SITE_URL}/v1" in html
    assert "(1,000 + 500 × 4) × 1.25 × 1" in html
    assert "$0.0075" in html


def test_the_help_center_names_the_maintenance_window_and_retention(client, db, settings):
    settings.MAINTENANCE_START_HOUR = 2
    settings.MAINTENANCE_END_HOUR = 6
    settings.LOG_RETENTION_DAYS = 45
    html = client.get(reverse("console:help")).content.decode()
    assert "2:00 and 6:00" in html
    assert "kept for 45 days" in html


def test_the_dashboard_shows_the_first_run_steps_with_the_base_url(alice_client, settings):
    response = alice_client.get(reverse("console:dashboard"))
    assert response.status_code == 200
    html = response.content.decode()
    assert "Get started in three steps" in html
    assert f"curl {settings.SITE_URL}/v1/chat/completions" in html
    assert f'OpenAI(base_url="{settings.SITE_URL}/v1"' in html


def test_every_page_sends_a_strict_content_security_policy(client, db):
    response = client.get(reverse("console:help"))
    policy = response.headers["Content-Security-Policy"]
    assert "unsafe-inline" not in policy
    assert "unsafe-eval" not in policy
    nonce = re.search(r"script-src 'self' 'nonce-([^']+)'", policy).group(1)
    assert f'nonce="{nonce}"' in response.content.decode()
    assert "frame-ancestors 'none'" in policy
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_pages_carry_no_inline_scripts_or_styles(alice_client):
    for name in ["console:dashboard", "console:help", "console:profile"]:
        html = alice_client.get(reverse(name)).content.decode()
        for tag in re.findall(r"<script\b[^>]*>", html):
            assert "src=" in tag or 'type="application/json"' in tag, tag
        assert " style=" not in html
        assert "<style" not in html


def test_health_check_answers(client, db):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.content == b"ok"


@pytest.mark.parametrize("path", ["/admin/", "/profile/"])
def test_private_areas_need_a_login(client, db, path):
    response = client.get(path)
    assert response.status_code == 302
