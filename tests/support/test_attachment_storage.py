"""Ticket attachments wherever the files live: on local disk (the default) or in an S3 bucket
(MEDIA_S3_BUCKET), here a real S3-compatible server (moto's) on 127.0.0.1. The same journey
either way: a user attaches a screenshot through the ticket form, it is stored, its owner and
staff who handle tickets download it through the site, nobody else does, and deleting the
ticket deletes the file."""

import json
import os
import subprocess
import sys
import uuid
import warnings

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from django.conf import settings as django_settings
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from moto.server import ThreadedMotoServer

from console.support.models import Ticket, TicketAttachment
from tests.conftest import free_port, make_user, staff_client_for
from tests.support.test_tickets import open_ticket, png

pytestmark = pytest.mark.django_db(transaction=True)

BUCKET = "switchboard-attachments"
KEYS = {"MEDIA_S3_ACCESS_KEY_ID": "test-key", "MEDIA_S3_SECRET_ACCESS_KEY": "test-secret"}


def storage_from_environment(**variables):
    """STORAGES["default"] as console/settings.py builds it from these environment variables
    (and none of the MEDIA_S3_* of this process), in a process of its own."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MEDIA_S3_")}
    program = "import json, console.settings as s; print(json.dumps(s.STORAGES['default']))"
    done = subprocess.run(
        [sys.executable, "-c", program],
        env={**environment, **variables},
        cwd=django_settings.BASE_DIR,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return json.loads(done.stdout.splitlines()[-1])


@pytest.fixture(scope="module")
def s3_endpoint():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="module")
def bucket_storage(s3_endpoint):
    """The storage settings that MEDIA_S3_* give, pointed at the local S3 server."""
    return storage_from_environment(
        MEDIA_S3_BUCKET=BUCKET,
        MEDIA_S3_ENDPOINT_URL=s3_endpoint,
        MEDIA_S3_REGION="us-east-1",
        **KEYS,
    )


@pytest.fixture
def s3(s3_endpoint):
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id=KEYS["MEDIA_S3_ACCESS_KEY_ID"],
        aws_secret_access_key=KEYS["MEDIA_S3_SECRET_ACCESS_KEY"],
    )
    client.create_bucket(Bucket=BUCKET)
    yield client
    for found in client.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        client.delete_object(Bucket=BUCKET, Key=found["Key"])
    client.delete_bucket(Bucket=BUCKET)


class Disk:
    """Files on local disk under MEDIA_ROOT, read from the disk itself."""

    def __init__(self, root):
        self.root = root

    def read(self, name):
        return (self.root / name).read_bytes()

    def exists(self, name):
        return (self.root / name).exists()

    def lose(self, name):
        (self.root / name).unlink()


class Bucket:
    """Files in the bucket, read with boto3 straight from the S3 server."""

    def __init__(self, client):
        self.client = client

    def read(self, name):
        return self.client.get_object(Bucket=BUCKET, Key=name)["Body"].read()

    def exists(self, name):
        try:
            self.client.head_object(Bucket=BUCKET, Key=name)
        except ClientError as error:
            if error.response["ResponseMetadata"]["HTTPStatusCode"] == 404:
                return False
            raise
        return True

    def lose(self, name):
        self.client.delete_object(Bucket=BUCKET, Key=name)


@pytest.fixture(params=["disk", "bucket"])
def where(request, settings, tmp_path):
    """Where attachments are stored in this test, as the settings would have it."""
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.SUPPORT_EMAIL = "support@switchboard.test"
    if request.param == "disk":
        assert storage_from_environment() == {
            "BACKEND": "django.core.files.storage.FileSystemStorage"
        }
        return Disk(settings.MEDIA_ROOT)
    client = request.getfixturevalue("s3")
    settings.STORAGES = {**settings.STORAGES, "default": request.getfixturevalue("bucket_storage")}
    return Bucket(client)


def attach_a_screenshot(client, **ticket):
    assert open_ticket(client, attachments=[png("receipt.png")], **ticket).status_code == 302
    return TicketAttachment.objects.latest("pk")


def download(client, attachment):
    return client.get(reverse("console:ticket_attachment", args=[attachment.pk]))


def test_a_screenshot_is_stored_and_comes_back_to_its_owner(alice_client, where, settings):
    screenshot = attach_a_screenshot(alice_client)
    stored = where.read(screenshot.file.name)
    assert stored.startswith(b"\x89PNG") and len(stored) == screenshot.size

    response = download(alice_client, screenshot)
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == stored
    assert response["Content-Type"] == "image/png"
    assert response["Content-Length"] == str(len(stored))
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Disposition"] == f'inline; filename="attachment-{screenshot.pk}.png"'
    assert "sandbox" in response["Content-Security-Policy"]
    if isinstance(where, Bucket):
        # In the bucket with the type it was checked as, and nothing on the web server's disk.
        head = where.client.head_object(Bucket=BUCKET, Key=screenshot.file.name)
        assert head["ContentType"] == "image/png"
        assert not settings.MEDIA_ROOT.exists()


def test_only_the_owner_and_staff_who_handle_tickets_get_a_file(alice_client, bob_client, where):
    screenshot = attach_a_screenshot(alice_client)
    stored = where.read(screenshot.file.name)
    assert download(bob_client, screenshot).status_code == 404

    handler = make_user("handler@example.com")
    handler.is_staff = True
    handler.save()
    assert download(staff_client_for(handler), screenshot).status_code == 404
    handler.user_permissions.add(Permission.objects.get(codename="view_ticket"))
    by_staff = download(staff_client_for(handler), screenshot)
    assert by_staff.status_code == 200
    assert b"".join(by_staff.streaming_content) == stored


def test_deleting_a_ticket_deletes_its_files_and_no_others(alice_client, bob_client, where):
    kept = attach_a_screenshot(bob_client, subject="Bob's")
    gone = attach_a_screenshot(alice_client, subject="Alice's")
    assert where.exists(gone.file.name) and where.exists(kept.file.name)

    Ticket.objects.get(subject="Alice's").delete()
    assert not where.exists(gone.file.name)
    assert where.exists(kept.file.name)


def test_a_bucket_unreachable_after_a_deletion_leaves_the_deletion_done(
    alice_client, settings, s3, bucket_storage, caplog
):
    settings.STORAGES = {**settings.STORAGES, "default": bucket_storage}
    screenshot = attach_a_screenshot(alice_client)
    unreachable = {
        **bucket_storage["OPTIONS"],
        "endpoint_url": f"http://127.0.0.1:{free_port()}",
        "client_config": Config(retries={"total_max_attempts": 1}),
    }
    settings.STORAGES = {**settings.STORAGES, "default": {**bucket_storage, "OPTIONS": unreachable}}

    Ticket.objects.get().delete()
    assert not Ticket.objects.exists() and not TicketAttachment.objects.exists()
    # The file stays behind, and the log says so.
    assert "_delete_attachment_file" in caplog.text and "in on_commit()" in caplog.text
    assert Bucket(s3).exists(screenshot.file.name)


def test_a_file_lost_from_the_storage_is_not_found(alice_client, where):
    screenshot = attach_a_screenshot(alice_client)
    where.lose(screenshot.file.name)
    assert download(alice_client, screenshot).status_code == 404


def test_over_asgi_a_large_file_streams_from_the_bucket(
    live_site, alice_client, settings, s3, bucket_storage
):
    settings.STORAGES = {**settings.STORAGES, "default": bucket_storage}
    pdf = b"%PDF-1.7\n" + os.urandom(300_000) + b"\n%%EOF\n"
    upload = SimpleUploadedFile("invoice.pdf", pdf, content_type="application/pdf")
    assert open_ticket(alice_client, attachments=[upload]).status_code == 302
    invoice = TicketAttachment.objects.get()
    url = live_site.url + reverse("console:ticket_attachment", args=[invoice.pk])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = httpx.get(url, cookies={"sessionid": alice_client.cookies["sessionid"].value})
    assert got.status_code == 200 and got.content == pdf
    assert got.headers["Content-Type"] == "application/pdf"
    assert got.headers["Content-Disposition"].startswith("attachment;")
    # Sent a block at a time, not read whole by Django first (which warns when it does).
    assert not [w for w in caught if "synchronous iterators" in str(w.message)]


def test_objects_in_the_bucket_are_private(alice_client, settings, s3, bucket_storage):
    settings.STORAGES = {**settings.STORAGES, "default": bucket_storage}
    screenshot = attach_a_screenshot(alice_client)
    acl = s3.get_object_acl(Bucket=BUCKET, Key=screenshot.file.name)
    grants = [(g["Grantee"].get("ID"), g["Permission"]) for g in acl["Grants"]]
    assert grants == [(acl["Owner"]["ID"], "FULL_CONTROL")]


def test_the_bucket_is_configured_from_the_environment():
    storage = storage_from_environment(
        MEDIA_S3_BUCKET="files", MEDIA_S3_PREFIX="/switchboard/", MEDIA_S3_REGION="eu-west-3"
    )
    assert storage["BACKEND"] == "storages.backends.s3.S3Storage"
    options = storage["OPTIONS"]
    assert options["bucket_name"] == "files" and options["location"] == "switchboard"
    assert options["region_name"] == "eu-west-3"
    assert options["default_acl"] == "private" and options["file_overwrite"] is False
    # Without keys or an endpoint of its own, boto3 finds them as usual (an instance role).
    assert not {"access_key", "secret_key", "endpoint_url"} & options.keys()
    # A bucket with ACLs switched off takes no ACL at all.
    no_acl = storage_from_environment(MEDIA_S3_BUCKET="files", MEDIA_S3_ACL="none")
    assert no_acl["OPTIONS"]["default_acl"] is None


def test_a_files_name_is_never_reused_in_the_bucket(settings, s3, bucket_storage):
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    settings.STORAGES = {**settings.STORAGES, "default": bucket_storage}
    name = f"{TicketAttachment.FOLDER}/{uuid.uuid4().hex}.png"
    first = default_storage.save(name, ContentFile(b"first"))
    second = default_storage.save(name, ContentFile(b"second"))
    assert first == name and second != name
    assert s3.get_object(Bucket=BUCKET, Key=first)["Body"].read() == b"first"
