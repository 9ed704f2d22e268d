from django.conf import settings


def site(request):
    return {
        "site_name": settings.SITE_NAME,
        "site_url": settings.SITE_URL,
        "api_base": settings.SITE_URL + "/v1",
        "support_email": settings.SUPPORT_EMAIL,
    }
