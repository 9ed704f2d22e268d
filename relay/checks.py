from collections.abc import Sequence

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Warning, register


@register(deploy=True)
def journal_on_in_production(
    app_configs: Sequence[AppConfig] | None, **kwargs: object
) -> list[CheckMessage]:
    if not settings.GATEWAY_JOURNAL:
        return [
            Warning(
                "GATEWAY_JOURNAL is off: a gateway process that dies loses the requests it "
                "answered since its last flush, neither logged nor charged.",
                hint="Unset GATEWAY_JOURNAL (it is on by default); turn it off only to measure "
                "what it costs.",
                id="relay.W001",
            )
        ]
    return []
