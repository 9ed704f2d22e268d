"""Staff pages that need a named permission, declared where a test can read it."""

import functools

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest


def permission_required(*perms):
    """Answers 403 unless the signed-in user has every one of `perms` ("app.codename").

    The names stay on the view as `view.permission_required`, where the admin permission test
    reads them. Decorates a function view or a ModelAdmin method alike."""

    def decorator(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            request = args[0] if isinstance(args[0], HttpRequest) else args[1]
            if not request.user.has_perms(perms):
                raise PermissionDenied(f"This page needs the permission {', '.join(perms)}.")
            return view(*args, **kwargs)

        wrapper.permission_required = perms
        return wrapper

    return decorator
