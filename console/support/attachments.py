"""Files people attach to support tickets: images (PNG, JPEG, WebP) and PDFs.

A file is judged by its content, never its name. Images must decode, and are stored
re-encoded by Pillow, upright and without metadata (no location, no smuggled payload). A PDF
must start and end as one; it is kept as sent, and only ever served as a download to a
sandbox. Everything is stored under a random name, outside the static files.
"""

import io
import uuid

from django import forms
from django.conf import settings
from django.core.files.base import ContentFile
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_FORMATS = {
    "PNG": ("image/png", "png"),
    "JPEG": ("image/jpeg", "jpg"),
    "WEBP": ("image/webp", "webp"),
}
# Screenshots of 5K screens and 24-megapixel photos fit; decoding one takes ~100 MB at most.
MAX_PIXELS = 25_000_000
ALLOWED = "a screenshot (PNG, JPEG or WebP) or a PDF"


def check(upload):
    """(ContentFile under a random name, content type) for an upload, or ValidationError."""
    limit = settings.TICKET_ATTACHMENT_MAX_BYTES
    if upload.size > limit:
        raise forms.ValidationError(
            f"“{upload.name}” is {upload.size / 1_048_576:.1f} MB; attachments can be at most "
            f"{limit // 1_048_576} MB. Crop the screenshot or attach a smaller file."
        )
    data = upload.read()
    if data.startswith(b"%PDF-"):
        if b"%%EOF" not in data[-2048:]:
            raise forms.ValidationError(f"“{upload.name}” is not a complete PDF file.")
        return ContentFile(data, name=f"{uuid.uuid4().hex}.pdf"), "application/pdf"
    try:
        with Image.open(io.BytesIO(data)) as probe:
            kind, (width, height) = probe.format, probe.size
            probe.verify()
        kind = "JPEG" if kind == "MPO" else kind  # phone cameras' JPEG with a depth map
        if kind not in IMAGE_FORMATS:
            raise UnidentifiedImageError(kind)
        if width * height > MAX_PIXELS:
            # A small file can unpack to gigabytes; refuse before decoding it.
            raise forms.ValidationError(
                f"“{upload.name}” is {width}×{height} pixels; attach a screenshot of at most "
                f"{MAX_PIXELS // 1_000_000} megapixels."
            )
        with Image.open(io.BytesIO(data)) as opened:
            image = ImageOps.exif_transpose(opened)  # turned as the camera was held
            out = io.BytesIO()
            if kind == "JPEG":
                image.convert("RGB").save(out, "JPEG", quality=90)
            else:
                image.save(out, kind)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        raise forms.ValidationError(
            f"“{upload.name}” is not {ALLOWED}: its content is not one of those, whatever its "
            "name says."
        ) from None
    content_type, extension = IMAGE_FORMATS[kind]
    return ContentFile(out.getvalue(), name=f"{uuid.uuid4().hex}.{extension}"), content_type


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class AttachmentsField(forms.FileField):
    """Several files in one field, each checked; cleans to [(ContentFile, type, name, size)]."""

    widget = MultipleFileInput

    def __init__(self, *args, max_files=5, **kwargs):
        self.max_files = max_files
        kwargs.setdefault("required", False)
        kwargs.setdefault("label", "Attachments")
        megabytes = settings.TICKET_ATTACHMENT_MAX_BYTES // 1_048_576
        kwargs.setdefault("help_text", f"Up to {max_files} files: {ALLOWED}, {megabytes} MB each.")
        super().__init__(*args, **kwargs)

    def clean(self, data, initial=None):
        files = data if isinstance(data, list | tuple) else ([data] if data else [])
        if len(files) > self.max_files:
            raise forms.ValidationError(f"Attach at most {self.max_files} files.")
        checked, errors = [], []
        for upload in files:
            try:
                content, content_type = check(upload)
            except forms.ValidationError as error:
                errors.extend(error.messages)
                continue
            checked.append((content, content_type, upload.name[:200], content.size))
        if errors:
            raise forms.ValidationError(errors)
        return checked
