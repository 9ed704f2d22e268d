"""The support pages: a user's tickets, opening one, its thread, and its files."""

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.handlers.asgi import ASGIRequest
from django.core.paginator import Paginator
from django.http import FileResponse, Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from accounts.staff import staff_may_enter
from billing.models import RechargeOrder
from console.lib.params import id_param, text_param
from console.lib.ratelimit import attempts, given_back_on_error, limit_reached
from console.lib.streaming import in_chunks
from console.support import services
from console.support.forms import ReplyForm, TicketForm
from console.support.models import Ticket, TicketAttachment
from logs import stats
from tokens.models import Token


def _get_ticket_for_user(request, number):
    if text_param(number, max_length=16) is None:
        raise Http404("No such ticket.")
    return get_object_or_404(Ticket, number=number, user=request.user)


@login_required
def ticket_list(request):
    status = request.GET.get("status", "")
    tickets = request.user.tickets.all()
    if status == "active":
        tickets = tickets.exclude(status__in=[Ticket.Status.RESOLVED, Ticket.Status.CLOSED])
    elif status in Ticket.Status.values:
        tickets = tickets.filter(status=status)
    page = Paginator(tickets, 25).get_page(request.GET.get("page"))
    return render(
        request,
        "support/tickets.html",
        {"page": page, "status": status, "statuses": Ticket.Status.choices},
    )


@login_required
def ticket_new(request):
    initial = {"category": request.GET.get("category", "")}
    number = text_param(request.GET.get("order"), max_length=24)
    if number:
        order = RechargeOrder.objects.filter(number=number, user=request.user).first()
        if order is not None:
            initial.update(
                order=order.pk,
                category=Ticket.Category.RECHARGE,
                subject=f"Recharge {order.number} not credited",
            )
    form = TicketForm(
        request.POST or None, request.FILES or None, user=request.user, initial=initial
    )
    limit, key = settings.TICKETS_PER_HOUR, f"tickets:{request.user.pk}"
    too_many = (
        f"You opened {limit} tickets in the last hour. Add to one of them, or try again later."
    )
    if request.method == "POST" and attempts(key, window=3600) >= limit:
        # Refused before the attachments are even decoded; what was typed stays.
        form = TicketForm(request.POST, user=request.user, initial=initial)
        form.add_error(None, too_many)
    elif request.method == "POST" and form.is_valid():
        # Only tickets opened count, and each takes its place atomically: of simultaneous posts
        # that all passed the check above, only as many as the limit allows get through.
        if limit_reached(key, limit=limit, window=3600):
            form.add_error(None, too_many)
        else:
            with given_back_on_error(key, window=3600):
                ticket = services.ticket_open(user=request.user, form=form)
            messages.success(
                request, f"Ticket {ticket.number} opened. We answer here and by email."
            )
            return redirect(ticket)
    return render(
        request,
        "support/ticket_new.html",
        {
            "form": form,
            "maintenance_start": settings.MAINTENANCE_START_HOUR,
            "maintenance_end": settings.MAINTENANCE_END_HOUR,
            "site_time_zone": settings.TIME_ZONE,
        },
    )


@login_required
def token_ips(request):
    """The addresses that used one of the user's tokens lately, for the abnormal-charges form."""
    chosen = id_param(request.GET.get("token"))
    token = None
    if chosen is not None:
        token = Token.objects.filter(user=request.user, pk=chosen).first()
    ips = list(stats.addresses(request.user, 7, token_id=token.pk)[:20]) if token else []
    return render(request, "support/ticket_new.html#token-ips", {"token": token, "ips": ips})


@login_required
def ticket_detail(request, number):
    ticket = _get_ticket_for_user(request, number)
    form = ReplyForm()
    return render(request, "support/ticket.html", _thread_context(ticket, form))


def _thread_context(ticket, form):
    thread = ticket.messages.filter(internal=False).prefetch_related("attachments")
    return {"ticket": ticket, "thread": thread, "form": form, "can_reopen": ticket.can_reopen()}


@login_required
@require_POST
def ticket_reply(request, number):
    ticket = _get_ticket_for_user(request, number)
    form, message = ReplyForm(request.POST, request.FILES), None
    refusal = _reply_refusal(request, ticket)
    if refusal:
        form = ReplyForm(request.POST)  # the attachments are not even read
        form.add_error(None, refusal)
    elif form.is_valid():
        try:
            message = services.ticket_reply(
                ticket=ticket,
                author=request.user,
                body=form.cleaned_data["message"],
                attachments=form.cleaned_data["attachments"],
            )
        except services.TicketClosed:
            form.add_error(None, "This ticket was closed just now. Reopen it to reply.")
        ticket.refresh_from_db()
    if message is not None:
        if request.htmx:
            return render(
                request,
                "support/ticket.html#reply-area",
                {**_thread_context(ticket, ReplyForm()), "new_message": message},
            )
        messages.success(request, "Reply sent.")
        return redirect(ticket)
    # Errors come back with 200, which htmx swaps in place (it leaves 4xx alone).
    template = "support/ticket.html#reply-area" if request.htmx else "support/ticket.html"
    return render(request, template, _thread_context(ticket, form))


def _reply_refusal(request, ticket):
    if ticket.is_closed:
        return "This ticket is closed. Reopen it to reply, or open a new ticket."
    limit = settings.TICKET_REPLIES_PER_HOUR
    if limit_reached(f"ticket-replies:{request.user.pk}", limit=limit, window=3600):
        return f"You sent {limit} replies in the last hour. Try again later."
    return None


@login_required
@require_POST
def ticket_close(request, number):
    ticket = _get_ticket_for_user(request, number)
    if not ticket.is_closed:
        services.ticket_set_status(ticket=ticket, status=Ticket.Status.CLOSED, by=request.user)
        messages.success(request, "Ticket closed. You can reopen it within 30 days.")
    return redirect(ticket)


@login_required
@require_POST
def ticket_reopen(request, number):
    ticket = _get_ticket_for_user(request, number)
    if ticket.can_reopen():
        services.ticket_set_status(
            ticket=ticket, status=Ticket.Status.WAITING_STAFF, by=request.user
        )
        messages.success(request, "Ticket reopened. Add a reply to say what is still wrong.")
    elif ticket.is_closed:
        messages.error(request, "This ticket was closed more than 30 days ago: open a new ticket.")
    return redirect(ticket)


@login_required
def attachment(request, pk):
    """A ticket's file, for its owner and staff only, never run by the browser as a page.

    Read from the storage and sent from here, wherever the files live (local disk or a
    bucket), so that who may see a file is decided by this check and by no address."""
    found = get_object_or_404(TicketAttachment.objects.select_related("message__ticket"), pk=pk)
    ticket = found.message.ticket
    if staff_may_enter(request) and request.user.has_perm("support.view_ticket"):
        pass  # staff who handle tickets see every file, internal notes' too
    elif ticket.user_id != request.user.pk or found.message.internal:
        raise Http404("No such attachment.")
    try:
        stored = found.file.storage.open(found.file.name, "rb")
    except FileNotFoundError:
        raise Http404("This attachment is no longer stored.") from None
    # The type is the one the upload was checked as, never one the storage guessed.
    response = FileResponse(stored, content_type=found.content_type)
    inline = found.content_type.startswith("image/")
    disposition = "inline" if inline else "attachment"
    response["Content-Disposition"] = (
        f'{disposition}; filename="attachment-{found.pk}.{found.file.name.rsplit(".", 1)[-1]}"'
    )
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "sandbox; default-src 'none'"
    response["Cache-Control"] = "private, max-age=3600"
    if isinstance(request, ASGIRequest):
        # Over ASGI, sent a block at a time rather than read whole first (Django's default).
        response.block_size = 64 * 1024
        response.streaming_content = in_chunks(response.streaming_content)
    return response
