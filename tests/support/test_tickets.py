"""Support tickets: opening one about a late recharge, staff crediting it from admin, the
thread, attachments checked by content, and nobody else's tickets."""

import io
from datetime import timedelta

import pytest
from django.core import mail
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import timezone
from PIL import Image

from billing.models import RechargeOrder
from console.support import services
from console.support.models import Ticket, TicketAttachment, TicketMessage
from console.support.tasks import send_ticket_email
from tests.billing.test_orders import make_order
from tests.conftest import balance_of, ledger_sum

# Ticket emails leave on commit, as in production: the tests commit.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.SUPPORT_EMAIL = "support@switchboard.test"
    return settings.MEDIA_ROOT


def png(name="payment.png", size=(40, 30), color="navy", fmt="PNG", **save):
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, fmt, **save)
    return SimpleUploadedFile(name, out.getvalue(), content_type="image/png")


def open_ticket(client, **data):
    fields = {"category": "other", "subject": "A question", "message": "Hello."}
    return client.post(reverse("console:ticket_new"), {**fields, **data})


def stored_files(media):
    folder = media / "ticket-attachments"
    return sorted(folder.iterdir()) if folder.exists() else []


def test_a_late_recharge_ends_credited_by_staff_from_the_ticket(
    alice_client, alice, staff_client, _media
):
    late = make_order(alice, created_at=timezone.now() - timedelta(minutes=25))
    history = alice_client.get(reverse("billing:recharge")).content.decode()
    link = f"{reverse('console:ticket_new')}?order={late.number}"
    assert link in history

    form = alice_client.get(link).content.decode()
    assert f"Recharge {late.number} not credited" in form
    assert f'value="{late.pk}" selected' in form

    response = alice_client.post(
        reverse("console:ticket_new"),
        {
            "category": "recharge",
            "subject": f"Recharge {late.number} not credited",
            "order": late.pk,
            "message": "I paid 25 minutes ago, here is the receipt.",
            "attachments": [png()],
        },
    )
    ticket = Ticket.objects.get()
    assert response.status_code == 302 and response.url == ticket.get_absolute_url()
    assert (ticket.order, ticket.status, ticket.user) == (late, Ticket.Status.OPEN, alice)
    assert [m.to for m in mail.outbox] == [["support@switchboard.test"]]
    assert late.number in mail.outbox[0].body and "admin" in mail.outbox[0].body
    order_page = alice_client.get(late.get_absolute_url()).content.decode()
    assert ticket.number in order_page

    # Staff: the ticket is flagged among those with a pending order.
    changelist = reverse("admin:support_ticket_changelist")
    listed = staff_client.get(changelist, {"order": "pending"}).content.decode()
    assert ticket.number in listed and "late-order" in listed
    change = reverse("admin:support_ticket_change", args=[ticket.pk])
    page = staff_client.get(change).content.decode()
    credit = reverse("admin:support_ticket_credit_order", args=[ticket.pk])
    assert credit in page and "payment.png" in page

    confirm = staff_client.get(credit).content.decode()
    assert "Credit $20.00" in confirm and f"ticket {ticket.number}" in confirm
    done = staff_client.post(credit, {"reason": f"Seen in Stripe, ticket {ticket.number}."})
    assert done.status_code == 302 and done.url == change
    late.refresh_from_db()
    assert late.status == RechargeOrder.Status.CREDITED
    assert balance_of(alice) == 20_000_000 == ledger_sum(alice)
    assert late.actions.get().reason == f"Seen in Stripe, ticket {ticket.number}."
    # Crediting twice does nothing more.
    staff_client.post(credit, {"reason": "again"})
    assert balance_of(alice) == 20_000_000
    assert "Credit by hand…" not in staff_client.get(change).content.decode()

    # Staff reply inline and resolve, in one save: one email tells of both.
    staff_client.post(
        change,
        {
            "status": "resolved",
            "assigned_to": "",
            "reply": "Your payment arrived late; we credited it by hand.",
        },
    )
    ticket.refresh_from_db()
    assert ticket.status == Ticket.Status.RESOLVED
    user_mails = [m for m in mail.outbox if m.to == ["alice@example.com"]]
    assert len(user_mails) == 1
    assert "we credited it by hand" in user_mails[0].body
    assert "We marked the ticket resolved" in user_mails[0].body

    # The user sees the balance, the reply, and not the internal note.
    thread = alice_client.get(ticket.get_absolute_url()).content.decode()
    assert "we credited it by hand" in thread and "Seen in Stripe" not in thread
    assert "$20.00" in alice_client.get(reverse("console:dashboard")).content.decode()
    screenshot = TicketAttachment.objects.get()
    shot = alice_client.get(reverse("console:ticket_attachment", args=[screenshot.pk]))
    assert shot.status_code == 200 and shot["Content-Type"] == "image/png"
    assert "sandbox" in shot["Content-Security-Policy"]
    staff_shot = staff_client.get(reverse("console:ticket_attachment", args=[screenshot.pk]))
    assert staff_shot.status_code == 200
    assert len(mail.outbox) == 2


def test_each_event_sends_its_email_exactly_once(alice_client, alice, charlie):
    open_ticket(alice_client, subject="Can't pay & stuck", message="First.")
    ticket = Ticket.objects.get()
    first = ticket.messages.get()
    # A retried task does not send again.
    send_ticket_email.delay(ticket.pk, first.pk, "new")
    assert len(mail.outbox) == 1
    assert "Can't pay & stuck" in mail.outbox[0].subject  # a subject is text, not HTML

    alice_client.post(reverse("console:ticket_reply", args=[ticket.number]), {"message": "More."})
    ticket.refresh_from_db()
    assert ticket.status == Ticket.Status.WAITING_STAFF
    assert len(mail.outbox) == 2 and mail.outbox[1].to == ["support@switchboard.test"]

    services.ticket_reply(ticket=ticket, author=charlie, body="Looking at it.", internal=True)
    assert len(mail.outbox) == 2
    services.ticket_reply(ticket=ticket, author=charlie, body="Fixed.")
    ticket.refresh_from_db()
    assert ticket.status == Ticket.Status.WAITING_USER and ticket.waiting_since is None
    assert len(mail.outbox) == 3 and mail.outbox[2].to == ["alice@example.com"]
    assert "[" + ticket.number + "]" in mail.outbox[2].subject

    # The user closing their own ticket is not news to them.
    alice_client.post(reverse("console:ticket_close", args=[ticket.number]))
    ticket.refresh_from_db()
    assert ticket.status == Ticket.Status.CLOSED and len(mail.outbox) == 3
    # Staff answering a closed ticket open it again for the user.
    services.ticket_reply(ticket=ticket, author=charlie, body="One more thing from us.")
    ticket.refresh_from_db()
    assert (ticket.status, ticket.closed_at) == (Ticket.Status.WAITING_USER, None)
    assert len(mail.outbox) == 4


def test_the_form_asks_what_each_category_needs(alice_client, alice, bob):
    make_order(alice)
    response = open_ticket(alice_client, category="recharge")
    assert "Choose the order that was not credited" in response.content.decode()
    response = open_ticket(alice_client, category="api_errors", model="gpt-4o-mini")
    body = response.content.decode()
    assert "Say roughly when the errors happened." in body
    assert "Paste the error message you got." in body
    assert "daily maintenance" in body
    response = open_ticket(alice_client, category="api_errors", request_id="not-an-id")
    assert "That is not a request id" in response.content.decode()
    response = open_ticket(alice_client, category="line_access")
    assert "Choose the line you need." in response.content.decode()
    # Bob's order is not among Alice's choices.
    bobs = make_order(bob)
    response = open_ticket(alice_client, category="recharge", order=bobs.pk)
    assert "Select a valid choice" in response.content.decode()
    assert not Ticket.objects.exists()

    open_ticket(
        alice_client,
        category="api_errors",
        error_time="2026-11-20T10:15",
        model="gpt-4o-mini",
        error_text="503 upstream_unavailable",
        request_id="01a2b3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b",
    )
    ticket = Ticket.objects.get()
    assert ticket.details["model"] == "gpt-4o-mini"
    assert str(ticket.request_id) == "01a2b3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b"
    assert (
        "503 upstream_unavailable" in alice_client.get(ticket.get_absolute_url()).content.decode()
    )


def test_line_access_tickets_link_to_the_users_grants(alice_client, alice, staff_client):
    from billing.models import Line

    training = Line.objects.create(name="training", requires_grant=True)
    open_ticket(alice_client, category="line_access", line="training", volume="50M tokens a day")
    ticket = Ticket.objects.get()
    assert ticket.details == {"line": "training", "volume": "50M tokens a day"}
    page = staff_client.get(reverse("admin:support_ticket_change", args=[ticket.pk]))
    html = page.content.decode()
    grant_add = reverse("admin:billing_linegrant_add")
    assert f"{grant_add}?user={alice.pk}&amp;line={training.pk}" in html
    assert "Current grants: none" in html


def test_abnormal_charges_show_the_tokens_recent_addresses(alice_client, alice, bob, default_line):
    from logs.models import IpDay
    from tokens import services as token_services

    token, _key = token_services.token_create(user=alice, name="Prod", line=default_line)
    bobs, _ = token_services.token_create(user=bob, name="Bob's", line=default_line)
    now = timezone.now()
    IpDay.objects.create(
        user_id=alice.pk,
        token_id=token.pk,
        day=now.date(),
        client_ip="203.0.113.9",
        requests=12,
        first_seen=now,
        last_seen=now,
    )
    url = reverse("console:ticket_token_ips")
    assert "203.0.113.9" in alice_client.get(url, {"token": token.pk}).content.decode()
    assert "Bob" not in alice_client.get(url, {"token": bobs.pk}).content.decode()
    open_ticket(alice_client, category="charges", token=bobs.pk)
    assert not Ticket.objects.exists()
    open_ticket(alice_client, category="charges", token=token.pk)
    assert Ticket.objects.get().token == token


@pytest.mark.parametrize(
    ("upload", "message"),
    [
        (
            SimpleUploadedFile("receipt.png", b"this is just text", content_type="image/png"),
            "its content is not one of those",
        ),
        (
            SimpleUploadedFile(
                "setup.png", b"MZ\x90\x00" + b"\x00" * 200, content_type="image/png"
            ),
            "its content is not one of those",
        ),
        (
            SimpleUploadedFile(
                "page.png", b"<html><script>alert(1)</script>", content_type="image/png"
            ),
            "its content is not one of those",
        ),
        (
            SimpleUploadedFile("half.pdf", b"%PDF-1.7\n1 0 obj\n", content_type="application/pdf"),
            "is not a complete PDF file",
        ),
        (png("animated.gif", fmt="GIF"), "its content is not one of those"),
        (png("huge.png", size=(8000, 6000)), "8000×6000 pixels"),
    ],
    ids=["text", "executable", "html", "truncated-pdf", "gif", "pixel-bomb"],
)
def test_files_are_judged_by_their_content(alice_client, _media, upload, message):
    response = open_ticket(alice_client, attachments=[upload])
    assert message in response.content.decode()
    assert upload.name in response.content.decode()
    assert not Ticket.objects.exists() and not TicketMessage.objects.exists()
    assert stored_files(_media) == []


def test_a_file_over_the_limit_is_refused_with_its_size(alice_client, settings, _media):
    settings.TICKET_ATTACHMENT_MAX_BYTES = 1024 * 1024
    big = SimpleUploadedFile("scan.pdf", b"%PDF-1.4\n" + b"0" * 1_200_000 + b"\n%%EOF\n")
    response = open_ticket(alice_client, attachments=[png(), big])
    body = response.content.decode()
    assert "“scan.pdf” is 1.1 MB; attachments can be at most 1 MB" in body
    assert not Ticket.objects.exists() and stored_files(_media) == []
    six = [png(f"shot{i}.png") for i in range(6)]
    assert "Attach at most 5 files." in open_ticket(alice_client, attachments=six).content.decode()


def test_good_files_are_stored_re_encoded_under_random_names(alice_client, _media):
    jpeg = png("photo.jpg", fmt="JPEG", exif=b"Exif\x00\x00secret-gps")
    pdf = SimpleUploadedFile("invoice.pdf", b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n")
    webp = png("shot.webp", fmt="WEBP")
    open_ticket(alice_client, attachments=[jpeg, pdf, webp])
    files = {a.original_name: a for a in TicketAttachment.objects.all()}
    assert {f.content_type for f in files.values()} == {
        "image/jpeg",
        "application/pdf",
        "image/webp",
    }
    stored = stored_files(_media)
    assert len(stored) == 3
    assert not any(p.stem in {"photo", "invoice", "shot"} for p in stored)
    assert b"secret-gps" not in (_media / files["photo.jpg"].file.name).read_bytes()
    served = alice_client.get(reverse("console:ticket_attachment", args=[files["invoice.pdf"].pk]))
    assert served["Content-Disposition"].startswith("attachment;")
    assert served["Content-Type"] == "application/pdf"


def test_html_in_a_message_is_shown_as_text(alice_client):
    open_ticket(
        alice_client, subject="<b>bold</b>", message='<script>alert("x")</script><img src=x>'
    )
    ticket = Ticket.objects.get()
    html = alice_client.get(ticket.get_absolute_url()).content.decode()
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&lt;img src=x&gt;" in html
    assert "<script>alert" not in html and "<b>bold</b>" not in html


def test_another_users_tickets_and_files_are_not_found(alice_client, alice, bob_client, charlie):
    open_ticket(alice_client, attachments=[png()])
    ticket = Ticket.objects.get()
    services.ticket_reply(
        ticket=ticket,
        author=charlie,
        body="Note",
        internal=True,
        attachments=[_checked(png("internal.png"))],
    )
    mine, internal = TicketAttachment.objects.order_by("id")
    number = ticket.number
    for method, url in [
        ("get", reverse("console:ticket", args=[number])),
        ("post", reverse("console:ticket_reply", args=[number])),
        ("post", reverse("console:ticket_close", args=[number])),
        ("post", reverse("console:ticket_reopen", args=[number])),
        ("get", reverse("console:ticket_attachment", args=[mine.pk])),
        ("get", reverse("console:ticket_attachment", args=[internal.pk])),
    ]:
        response = getattr(bob_client, method)(
            url, {"message": "hijack"} if method == "post" else {}
        )
        assert response.status_code == 404, url
    assert ticket.messages.count() == 2
    ticket.refresh_from_db()
    assert ticket.status == Ticket.Status.OPEN
    assert number not in bob_client.get(reverse("console:tickets")).content.decode()
    # Alice never gets staff's internal file either.
    url = reverse("console:ticket_attachment", args=[internal.pk])
    assert alice_client.get(url).status_code == 404
    # A signed-out visitor is sent to sign in.
    from django.test import Client

    assert Client().get(reverse("console:ticket", args=[number])).status_code == 302


def _checked(upload):
    from console.support.attachments import check

    content, content_type = check(upload)
    return content, content_type, upload.name, content.size


def test_a_closed_ticket_takes_no_reply_until_reopened_within_30_days(alice_client, alice):
    open_ticket(alice_client)
    ticket = Ticket.objects.get()
    reply = reverse("console:ticket_reply", args=[ticket.number])
    alice_client.post(reverse("console:ticket_close", args=[ticket.number]))
    response = alice_client.post(
        reply, {"message": "One more thing"}, headers={"HX-Request": "true"}
    )
    assert response.status_code == 200
    body = response.content.decode()
    assert "Reopen it to reply" in body and "One more thing" in body
    assert ticket.messages.count() == 1

    alice_client.post(reverse("console:ticket_reopen", args=[ticket.number]))
    ticket.refresh_from_db()
    assert ticket.status == Ticket.Status.WAITING_STAFF and ticket.closed_at is None
    response = alice_client.post(
        reply, {"message": "One more thing"}, headers={"HX-Request": "true"}
    )
    assert response.status_code == 200 and "One more thing" in response.content.decode()
    assert ticket.messages.count() == 2

    alice_client.post(reverse("console:ticket_close", args=[ticket.number]))
    Ticket.objects.filter(pk=ticket.pk).update(closed_at=timezone.now() - timedelta(days=31))
    response = alice_client.post(
        reverse("console:ticket_reopen", args=[ticket.number]), follow=True
    )
    assert "closed more than 30 days ago" in response.content.decode()
    ticket.refresh_from_db()
    assert ticket.status == Ticket.Status.CLOSED


def test_an_empty_reply_is_refused_in_place(alice_client):
    open_ticket(alice_client)
    ticket = Ticket.objects.get()
    url = reverse("console:ticket_reply", args=[ticket.number])
    response = alice_client.post(url, {"message": ""}, headers={"HX-Request": "true"})
    assert response.status_code == 200 and "This field is required." in response.content.decode()
    assert ticket.messages.count() == 1


def test_opening_tickets_is_rate_limited(alice_client, settings):
    settings.TICKETS_PER_HOUR = 2
    for _ in range(2):
        assert open_ticket(alice_client).status_code == 302
    response = open_ticket(alice_client)
    assert "You opened 2 tickets in the last hour" in response.content.decode()
    assert Ticket.objects.count() == 2


def test_my_tickets_filter_by_status_and_start_empty(alice_client, alice):
    empty = alice_client.get(reverse("console:tickets")).content.decode()
    assert "No tickets yet" in empty
    open_ticket(alice_client, subject="Still open")
    open_ticket(alice_client, subject="Done with")
    done = Ticket.objects.get(subject="Done with")
    alice_client.post(reverse("console:ticket_close", args=[done.number]))
    active = alice_client.get(reverse("console:tickets"), {"status": "active"}).content.decode()
    assert "Still open" in active and "Done with" not in active
    closed = alice_client.get(reverse("console:tickets"), {"status": "closed"}).content.decode()
    assert "Done with" in closed and "Still open" not in closed


def test_staff_filter_assign_and_keep_notes_from_the_user(staff_client, alice_client, charlie):
    open_ticket(alice_client, subject="Waiting long")
    ticket = Ticket.objects.get()
    Ticket.objects.filter(pk=ticket.pk).update(waiting_since=timezone.now() - timedelta(hours=3))
    changelist = reverse("admin:support_ticket_changelist")
    assert "Waiting long" in staff_client.get(changelist, {"waiting": "1h"}).content.decode()
    assert "Waiting long" not in staff_client.get(changelist, {"waiting": "1d"}).content.decode()
    assert "Waiting long" in staff_client.get(changelist, {"q": "alice@"}).content.decode()
    staff_client.post(
        changelist, {"action": "assign_to_me", "_selected_action": [ticket.pk]}, follow=True
    )
    ticket.refresh_from_db()
    assert ticket.assigned_to == charlie
    assert "Waiting long" in staff_client.get(changelist, {"assignee": "me"}).content.decode()

    change = reverse("admin:support_ticket_change", args=[ticket.pk])
    staff_client.post(
        change,
        {
            "status": ticket.status,
            "assigned_to": charlie.pk,
            "reply": "Customer seems to share the key.",
            "internal": "on",
        },
    )
    assert "Internal note" in staff_client.get(change).content.decode()
    assert "share the key" not in alice_client.get(ticket.get_absolute_url()).content.decode()
    assert len(mail.outbox) == 1  # the new ticket to staff only


def test_staff_changes_set_who_the_ticket_waits_for(alice_client, charlie):
    open_ticket(alice_client)
    ticket = Ticket.objects.get()
    Ticket.objects.filter(pk=ticket.pk).update(waiting_since=timezone.now() - timedelta(days=2))
    since = Ticket.objects.get().waiting_since
    # Asking the user something: the ticket no longer waits for staff.
    services.ticket_set_status(ticket=ticket, status=Ticket.Status.WAITING_USER, by=charlie)
    ticket.refresh_from_db()
    assert ticket.waiting_since is None
    assert "Your ticket is waiting for you" not in " ".join(m.subject for m in mail.outbox)
    # Back to staff: the clock starts again; from staff to staff it keeps running.
    services.ticket_set_status(ticket=ticket, status=Ticket.Status.WAITING_STAFF, by=charlie)
    ticket.refresh_from_db()
    assert ticket.waiting_since > since
    started = ticket.waiting_since
    services.ticket_set_status(ticket=ticket, status=Ticket.Status.OPEN, by=charlie)
    ticket.refresh_from_db()
    assert ticket.waiting_since == started
    services.ticket_set_status(ticket=ticket, status=Ticket.Status.RESOLVED, by=charlie)
    ticket.refresh_from_db()
    assert ticket.waiting_since is None and ticket.closed_at is not None
    assert mail.outbox[-1].subject.endswith("Your ticket is resolved")


def test_a_reply_to_a_ticket_closed_meanwhile_is_refused_and_kept(alice_client, charlie):
    open_ticket(alice_client)
    ticket = Ticket.objects.get()
    stale = Ticket.objects.get()  # the page the user had open
    services.ticket_set_status(ticket=ticket, status=Ticket.Status.RESOLVED, by=charlie)
    with pytest.raises(services.TicketClosed):
        services.ticket_reply(ticket=stale, author=stale.user, body="Still broken")
    ticket.refresh_from_db()
    assert ticket.status == Ticket.Status.RESOLVED and ticket.messages.count() == 1


def test_files_of_a_failed_save_and_of_deleted_tickets_do_not_stay(alice_client, alice, _media):
    from django.db import IntegrityError

    open_ticket(alice_client, attachments=[png()])
    ticket = Ticket.objects.get()
    assert len(stored_files(_media)) == 1
    # A reply whose database write fails leaves no file behind.
    with pytest.raises(IntegrityError):
        services.ticket_reply(
            ticket=ticket, author=alice, body=None, attachments=[_checked(png("two.png"))]
        )
    assert len(stored_files(_media)) == 1
    # Deleting the user deletes their tickets and the files with them.
    alice.delete()
    assert stored_files(_media) == []


def test_replies_are_rate_limited(alice_client, settings):
    settings.TICKET_REPLIES_PER_HOUR = 2
    open_ticket(alice_client)
    ticket = Ticket.objects.get()
    url = reverse("console:ticket_reply", args=[ticket.number])
    for text in ["one", "two"]:
        assert alice_client.post(url, {"message": text}).status_code == 302
    response = alice_client.post(url, {"message": "three"})
    assert "You sent 2 replies in the last hour" in response.content.decode()
    assert ticket.messages.count() == 3


def test_only_staff_who_handle_tickets_see_their_files(alice_client, alice):
    from django.contrib.auth.models import Permission

    from tests.conftest import make_user, staff_client_for

    open_ticket(alice_client, attachments=[png()])
    url = reverse("console:ticket_attachment", args=[TicketAttachment.objects.get().pk])
    editor = make_user("editor@example.com")
    editor.is_staff = True
    editor.save()
    assert staff_client_for(editor).get(url).status_code == 404
    editor.user_permissions.add(Permission.objects.get(codename="view_ticket"))
    assert staff_client_for(editor).get(url).status_code == 200


def test_phone_photos_are_taken_upright(alice_client):
    from PIL import ExifTags

    out = io.BytesIO()
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6  # the camera was turned: display rotated 90°
    Image.new("RGB", (40, 30), "teal").save(out, "JPEG", exif=exif)
    photo = SimpleUploadedFile("photo.jpg", out.getvalue(), content_type="image/jpeg")
    open_ticket(alice_client, attachments=[photo])
    stored = TicketAttachment.objects.get()
    with Image.open(stored.file.open("rb")) as image:
        assert image.size == (30, 40) and not image.getexif()


def test_with_nothing_to_choose_the_form_says_so_and_does_not_insist(alice_client):
    page = alice_client.get(reverse("console:ticket_new") + "?category=recharge").content.decode()
    assert "You have no recharge orders" in page and "You have no API tokens" in page
    # Without JavaScript, the chosen category's questions are shown.
    assert 'data-category="recharge">' in page and 'data-category="charges" hidden>' in page
    assert open_ticket(alice_client, category="recharge").status_code == 302
    assert open_ticket(alice_client, category="charges").status_code == 302
