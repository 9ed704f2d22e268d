from django.conf import settings
from django.core.checks import Error, Tags, register


@register(Tags.security, deploy=True)
def secret_key_of_its_own(app_configs, **kwargs):
    # Django's own check passes the built-in development key: it is long enough.
    if settings.SECRET_KEY in ("", settings.DEVELOPMENT_SECRET_KEY):
        return [
            Error(
                "SECRET_KEY is the built-in development key, which anyone with the code knows. "
                "Sessions, password reset links, API key hashes and the encryption of upstream "
                "keys all derive from it.",
                hint="Set SECRET_KEY to a long random value: "
                "python -c 'import secrets; print(secrets.token_urlsafe(50))'.",
                id="console.E001",
            )
        ]
    return []
