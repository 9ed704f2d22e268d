from django.db.models.signals import m2m_changed, post_delete, post_save

from billing.models import Line, ModelPrice
from relay.config import changed_on_commit
from relay.models import Channel


def _changed(sender: type, **kwargs: object) -> None:
    changed_on_commit()


for model in (Channel, ModelPrice, Line):
    post_save.connect(_changed, sender=model, dispatch_uid=f"relay-config-save-{model.__name__}")
    post_delete.connect(
        _changed, sender=model, dispatch_uid=f"relay-config-delete-{model.__name__}"
    )
m2m_changed.connect(_changed, sender=Channel.lines.through, dispatch_uid="relay-config-lines")
