"""The colour theme switch in the header: auto (as the system), light or dark; remembered in the
browser, applied before the page is painted, on every page, the charts included."""

from datetime import timedelta

import pytest
from django.utils import timezone

from logs.writer import write_batch
from tests.conftest import sign_in
from tests.logs.test_pages import make_record
from tokens.services import token_create

pytestmark = pytest.mark.browser

LIGHT_BG, DARK_BG = "rgb(246, 247, 249)", "rgb(13, 16, 22)"
BACKGROUND = "getComputedStyle(document.body).backgroundColor"


def choose(page, theme):
    page.get_by_label("Colour theme").first.click()
    page.get_by_role("menuitemradio", name=theme).click()


def test_a_chosen_theme_overrides_the_system_and_is_remembered(page, db):
    page.emulate_media(color_scheme="light")
    page.open("/")
    assert page.evaluate(BACKGROUND) == LIGHT_BG

    choose(page, "Dark")

    assert page.evaluate(BACKGROUND) == DARK_BG
    assert page.locator("[data-theme-choice=dark]").get_attribute("aria-checked") == "true"
    page.screenshot("home-dark")
    page.open("/pricing/")  # another page, a new load: the theme is there from the start
    assert page.evaluate("document.documentElement.dataset.theme") == "dark"
    assert page.evaluate(BACKGROUND) == DARK_BG


def test_the_theme_is_set_before_the_stylesheet_and_the_page_are_loaded(page, db):
    page.emulate_media(color_scheme="light")
    page.open("/")
    choose(page, "Dark")
    # Hold the stylesheet back: the page's theme is already set while nothing is painted yet.
    page.route("**/css/site.css", lambda route: None)
    page.goto(page.base_url + "/help/", wait_until="commit")
    page.wait_for_selector("html[data-theme]", state="attached")
    assert page.evaluate("document.documentElement.dataset.theme") == "dark"
    page.unroute("**/css/site.css")


def test_auto_follows_the_system(page, db):
    page.emulate_media(color_scheme="dark")
    page.open("/")
    choose(page, "Light")
    assert page.evaluate(BACKGROUND) == LIGHT_BG

    choose(page, "Auto")

    assert page.evaluate(BACKGROUND) == DARK_BG
    page.emulate_media(color_scheme="light")
    assert page.evaluate(BACKGROUND) == LIGHT_BG


def test_the_dashboard_charts_take_the_themes_colours(page, alice, default_line):
    token, _key = token_create(user=alice, name="Backend", line=default_line, notify=False)
    write_batch([make_record(alice, token, at=timezone.now() - timedelta(minutes=2))])
    page.emulate_media(color_scheme="light")
    sign_in(page, alice.email)
    page.open("/")
    page.wait_for_function("window.Chart && Chart.getChart('rpm-chart')")
    tick_colour = "Chart.getChart('rpm-chart').options.scales.x.ticks.color"
    light = page.evaluate(tick_colour)

    choose(page, "Dark")

    dark = page.evaluate(tick_colour)
    assert dark != light
    assert dark == page.evaluate(
        "getComputedStyle(document.documentElement).getPropertyValue('--text-3').trim()"
    )
    page.screenshot("dashboard-dark")
