import time

from allauth.account.signals import user_logged_in
from django.dispatch import receiver

from accounts.tasks import send_sign_in_notice
from console.lib.background import enqueue_on_commit


@receiver(user_logged_in)
def notice_new_sign_in(sender, request, user, **kwargs):
    """A sign-in from an address this account has not used last time sends a notice."""
    ip = request.META.get("REMOTE_ADDR")
    if ip and user.last_login_ip and ip != user.last_login_ip:
        agent = request.headers.get("User-Agent", "")[:200]
        enqueue_on_commit(send_sign_in_notice, user.pk, ip, agent, int(time.time() * 1000))
    if ip and ip != user.last_login_ip:
        type(user).objects.filter(pk=user.pk).update(last_login_ip=ip)
