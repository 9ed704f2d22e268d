"""The home page for visitors, the front door for signed-in users, and the playground's page."""

import json

from django.conf import settings

from billing.models import ModelPrice
from tokens.services import token_create


def test_a_visitor_sees_the_home_page_with_the_base_url_and_a_sign_up_button(client, db):
    response = client.get("/")

    assert response.status_code == 200
    html = response.content.decode()
    assert "One API for many models" in html
    assert f"{settings.SITE_URL}/v1" in html
    assert 'href="/accounts/signup/"' in html


def test_the_home_page_lists_the_models_on_sale_at_the_pricing_pages_prices(
    client, model_price, default_line
):
    ModelPrice.objects.create(model="retired-model", vendor="Old", enabled=False)
    ModelPrice.objects.create(
        model="dall-e-3", vendor="OpenAI", kind="image", pricing="per_call", call_price=40_000
    )

    home = client.get("/").content.decode()
    pricing = client.get("/pricing/").content.decode()

    assert "gpt-4o-mini" in home and "retired-model" not in home
    # gpt-4o-mini: × 0.075 → $0.15 per million prompt tokens, × 4 for completions → $0.60.
    for price in ("$0.15", "$0.60"):
        assert price in home and price in pricing
    assert "$0.04 per call" in home


def test_a_signed_in_user_gets_the_dashboard_at_the_root(alice_client):
    html = alice_client.get("/").content.decode()

    assert "<h1>Dashboard</h1>" in html
    assert "One API for many models" not in html


def test_the_logo_links_home(client, alice_client):
    for visitor in (client, alice_client):
        html = visitor.get("/help/").content.decode()
        assert '<a class="brand" href="/">' in html


def test_every_page_sets_its_colour_theme_from_a_static_script_in_the_head(client, db):
    html = client.get("/").content.decode()

    head = html.split("</head>")[0]
    assert "js/theme.js" in head
    theme_script = head.split("js/theme.js")[0].rsplit("<script", 1)[1]
    assert "defer" not in theme_script and "async" not in theme_script  # before the first paint
    assert head.index("js/theme.js") < head.index("css/site.css")
    for choice in ("auto", "light", "dark"):
        assert f'data-theme-choice="{choice}"' in html


def test_the_playground_needs_a_login(client, db):
    response = client.get("/playground/")

    assert response.status_code == 302
    assert response.url.startswith("/accounts/login/")


def playground_data(response):
    html = response.content.decode()
    start = html.index('<script id="playground-data" type="application/json">')
    return json.loads(html[start:].split(">", 1)[1].split("</script>", 1)[0])


def test_the_playground_offers_the_users_own_tokens_and_the_models_each_may_call(
    alice_client, alice, bob, prices, default_line
):
    token_create(user=alice, name="everything", line=default_line, notify=False)
    token_create(
        user=alice, name="narrow", line=default_line, allowed_models=["gpt-4o-mini"], notify=False
    )
    token_create(user=bob, name="bobs-token", line=default_line, notify=False)

    response = alice_client.get("/playground/")

    assert response.status_code == 200
    tokens = {token["name"]: token["models"] for token in playground_data(response)["tokens"]}
    assert tokens == {
        # Chat models only: embeddings are not chats.
        "everything": ["gpt-3.5-turbo-instruct", "gpt-4o-mini"],
        "narrow": ["gpt-4o-mini"],
    }
    assert "bobs-token" not in response.content.decode()


def test_the_playground_shows_code_with_the_key_from_the_environment_never_a_key(
    alice_client, alice, default_line
):
    _token, key = token_create(user=alice, name="mine", line=default_line, notify=False)

    response = alice_client.get("/playground/")

    html = response.content.decode()
    assert "SWITCHBOARD_API_KEY" in html
    assert key not in html and "sk-" not in html


def test_the_playground_asks_for_a_token_first(alice_client):
    html = alice_client.get("/playground/").content.decode()

    assert "Create a token first" in html
