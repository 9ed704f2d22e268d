from django.urls import reverse


def test_a_user_saves_name_and_time_zone(alice_client, alice):
    response = alice_client.post(
        reverse("console:profile"), {"name": "Alice A.", "time_zone": "Europe/Berlin"}
    )
    assert response.status_code == 302
    alice.refresh_from_db()
    assert alice.name == "Alice A."
    assert alice.time_zone == "Europe/Berlin"


def test_an_unknown_time_zone_is_refused(alice_client, alice):
    response = alice_client.post(
        reverse("console:profile"), {"name": "", "time_zone": "Mars/Olympus"}
    )
    assert response.status_code == 200
    assert "Select a valid choice." in response.content.decode()
    alice.refresh_from_db()
    assert alice.time_zone == "UTC"


def test_pages_show_times_in_the_users_time_zone(alice_client, alice):
    from django.utils import timezone

    alice.time_zone = "Asia/Tokyo"
    alice.save()
    response = alice_client.get(reverse("console:profile"))
    assert response.status_code == 200
    assert timezone.get_current_timezone_name() in {"Asia/Tokyo", "UTC"}
