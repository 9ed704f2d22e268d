from celery import shared_task

from accounts import emails
from console.announcements import delivery
from console.announcements.models import Announcement


# Celery names are those the tasks had in console.tasks, so that messages queued before
# they moved here still run.
@shared_task(name="console.tasks.fan_out_announcement")
def fan_out_announcement(announcement_id):
    """Splits the subscribers of an announcement into batch tasks. Safe to run again."""
    announcement = Announcement.objects.filter(pk=announcement_id).first()
    if announcement is None or announcement.kind not in delivery.EMAIL_KINDS:
        return 0
    batches, after = 0, 0
    while ids := delivery.recipients(announcement, after=after):
        send_announcement_batch.delay(announcement_id, ids)
        batches += 1
        after = ids[-1]
    return batches


@shared_task(name="console.tasks.send_announcement_batch", bind=True, **emails.RETRY)
def send_announcement_batch(self, announcement_id, user_ids):
    sent, _skipped = delivery.deliver_batch(
        announcement_id=announcement_id, user_ids=user_ids, claimer=self.request.id or ""
    )
    return sent
