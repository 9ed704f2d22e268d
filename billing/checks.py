from django.conf import settings
from django.core.checks import Error, Tags, register


@register(Tags.security, deploy=True)
def sandbox_payments_off_in_production(app_configs, **kwargs):
    if settings.PAYMENTS_SANDBOX and not settings.DEBUG:
        return [
            Error(
                "PAYMENTS_SANDBOX is on: anyone could credit a balance without paying.",
                hint="Unset PAYMENTS_SANDBOX in production.",
                id="billing.E001",
            )
        ]
    return []
