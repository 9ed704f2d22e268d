from datetime import timedelta
from urllib.parse import urlencode

from django import forms
from django.contrib import admin, messages
from django.db import transaction
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join, linebreaks, mark_safe
from django.utils.timesince import timesince

from billing import services as billing_services
from billing.forms import StaffNoteForm
from billing.models import Account, Line, LineGrant, RechargeOrder
from console.lib.money import format_usd
from console.lib.permissions import permission_required
from console.support import services
from console.support.attachments import AttachmentsField
from console.support.models import Ticket

OPEN_ORDER = [RechargeOrder.Status.PENDING, RechargeOrder.Status.PAID]


class WaitingFilter(admin.SimpleListFilter):
    title = "waiting for staff"
    parameter_name = "waiting"

    def lookups(self, request, model_admin):
        return [("1h", "More than an hour"), ("1d", "More than a day"), ("any", "Any time")]

    def queryset(self, request, queryset):
        spans = {"1h": timedelta(hours=1), "1d": timedelta(days=1), "any": timedelta(0)}
        span = spans.get(self.value())
        if span is None:
            return queryset
        return queryset.filter(waiting_since__lte=timezone.now() - span)


class PendingOrderFilter(admin.SimpleListFilter):
    title = "linked order"
    parameter_name = "order"

    def lookups(self, request, model_admin):
        return [("pending", "Has a pending order"), ("any", "Has an order")]

    def queryset(self, request, queryset):
        if self.value() == "pending":
            return queryset.filter(order__status__in=OPEN_ORDER)
        if self.value() == "any":
            return queryset.filter(order__isnull=False)
        return queryset


class AssigneeFilter(admin.SimpleListFilter):
    title = "assigned to"
    parameter_name = "assignee"

    def lookups(self, request, model_admin):
        return [("me", "Me"), ("nobody", "Nobody")]

    def queryset(self, request, queryset):
        if self.value() == "me":
            return queryset.filter(assigned_to=request.user)
        if self.value() == "nobody":
            return queryset.filter(assigned_to__isnull=True)
        return queryset


class TicketAdminForm(forms.ModelForm):
    """The ticket's status and assignee, plus a reply or an internal note to add."""

    reply = forms.CharField(
        required=False,
        max_length=10_000,
        widget=forms.Textarea(attrs={"rows": 5}),
        help_text="Sent to the user by email, and shown in their thread.",
    )
    internal = forms.BooleanField(
        required=False,
        label="Internal note",
        help_text="Keep this message among staff: the user never sees it and gets no email.",
    )
    attachments = AttachmentsField()

    class Meta:
        model = Ticket
        fields = ["status", "assigned_to"]

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("attachments") and not cleaned.get("reply"):
            self.add_error("reply", "Write a message to go with the attachments.")
        return cleaned


def _message_author(message):
    who = message.author.email if message.author else "deleted user"
    if message.internal:
        return f"Internal note · {who}"
    return f"Staff · {who}" if message.from_staff else f"User · {who}"


def _message_files(message):
    files = [
        (reverse("console:ticket_attachment", args=[file.pk]), file.original_name)
        for file in message.attachments.all()
    ]
    if not files:
        return ""
    links = format_html_join(", ", '<a href="{}" target="_blank" rel="noopener">{}</a>', files)
    return format_html("<p>Attachments: {}</p>", links)


@admin.register(Ticket)
class TicketAdmin(admin.ModelAdmin):
    form = TicketAdminForm
    list_display = (
        "number",
        "subject",
        "user",
        "category",
        "status",
        "waiting",
        "order_flag",
        "assigned_to",
        "updated_at",
    )
    list_filter = (
        "status",
        "category",
        WaitingFilter,
        PendingOrderFilter,
        AssigneeFilter,
    )
    search_fields = ("number", "subject", "user__email", "order__number")
    list_select_related = ("user", "order", "assigned_to")
    show_full_result_count = False
    actions = ["assign_to_me", "mark_resolved"]
    # Staff cannot open the user's page of a ticket (it is the owner's only).
    view_on_site = False
    readonly_fields = (
        "number",
        "user_link",
        "category",
        "subject",
        "created_at",
        "waiting",
        "linked_order",
        "linked_order_to_credit",
        "linked_token",
        "linked_request",
        "asked",
        "line_access",
        "thread",
    )
    fieldsets = (
        (None, {"fields": ("number", "user_link", "category", "subject", "created_at")}),
        (
            "Linked",
            {"fields": ("linked_order", "line_access", "linked_token", "linked_request", "asked")},
        ),
        ("Thread", {"fields": ("thread",)}),
        ("Answer", {"fields": ("reply", "internal", "attachments")}),
        ("Handle", {"fields": ("status", "assigned_to", "waiting")}),
    )

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None:
            return fieldsets
        # Show only the links this ticket has.
        shown = {
            "linked_order": obj.order_id is not None,
            "line_access": obj.category == Ticket.Category.LINE_ACCESS,
            "linked_token": obj.token_id is not None,
            "linked_request": obj.request_id is not None,
            "asked": bool(obj.details),
        }
        # Staff who may credit orders get the order with its "Credit by hand…" button.
        creditor = request.user.has_perm("billing.credit_order")
        swap = {"linked_order": "linked_order_to_credit"} if creditor else {}
        result = []
        for name, options in fieldsets:
            fields = [swap.get(f, f) for f in options["fields"] if shown.get(f, True)]
            if fields:
                result.append((name, {**options, "fields": fields}))
        return result

    def get_urls(self):
        return [
            path(
                "<int:pk>/credit-order/",
                self.admin_site.admin_view(self.credit_order),
                name="support_ticket_credit_order",
            ),
            *super().get_urls(),
        ]

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        field = super().formfield_for_dbfield(db_field, request, **kwargs)
        if db_field.name == "assigned_to":
            # Choosing a colleague, not editing users: no add/change links beside the list.
            wrapper = field.widget
            wrapper.can_add_related = wrapper.can_change_related = False
            wrapper.can_delete_related = wrapper.can_view_related = False
        return field

    @admin.display(description="messages")
    def thread(self, ticket):
        messages_ = ticket.messages.select_related("author").prefetch_related("attachments")
        return format_html_join(
            "",
            '<div class="ticket-message{}"><p><strong>{}</strong> · {}</p><div>{}</div>{}</div>',
            (
                (
                    " internal-note" if message.internal else "",
                    _message_author(message),
                    timezone.localtime(message.created_at).strftime("%Y-%m-%d %H:%M"),
                    mark_safe(linebreaks(message.body, autoescape=True)),  # noqa: S308
                    _message_files(message),
                )
                for message in messages_
            ),
        )

    @admin.display(description="waiting", ordering="waiting_since")
    def waiting(self, ticket):
        if ticket.waiting_since is None:
            return "—"
        minutes = int((timezone.now() - ticket.waiting_since).total_seconds() // 60)
        if minutes < 60:
            return f"{minutes} min"
        if minutes < 48 * 60:
            return f"{minutes // 60} h"
        return f"{minutes // 1440} d"

    @admin.display(description="order")
    def order_flag(self, ticket):
        order = ticket.order
        if order is None:
            return "—"
        if order.is_open:
            return format_html(
                '<strong class="late-order">{} — {}</strong>',
                order.number,
                order.get_status_display(),
            )
        return f"{order.number} — {order.get_status_display()}"

    @admin.display(description="user")
    def user_link(self, ticket):
        return format_html(
            '<a href="{}">{}</a> · balance {}',
            reverse("admin:billing_account_change", args=[ticket.user_id]),
            ticket.user.email,
            format_usd(Account.objects.get(user_id=ticket.user_id).balance),
        )

    @admin.display(description="recharge order")
    def linked_order(self, ticket):
        order = ticket.order
        return format_html(
            '<a href="{}">{}</a>: {} + bonus {}, {}, created {} ago',
            reverse("admin:billing_rechargeorder_change", args=[order.pk]),
            order.number,
            format_usd(order.amount),
            format_usd(order.bonus),
            order.get_status_display(),
            timesince(order.created_at),
        )

    @admin.display(description="recharge order")
    def linked_order_to_credit(self, ticket):
        if not ticket.order.is_open:
            return self.linked_order(ticket)
        return format_html(
            '{}<p><a class="button" href="{}">Credit by hand…</a></p>',
            self.linked_order(ticket),
            reverse("admin:support_ticket_credit_order", args=[ticket.pk]),
        )

    @admin.display(description="line access")
    def line_access(self, ticket):
        asked = ticket.details.get("line", "")
        line = Line.objects.filter(name=asked).first()
        granted = ", ".join(
            LineGrant.objects.filter(user_id=ticket.user_id)
            .order_by("line__name")
            .values_list("line__name", flat=True)
        )
        grant_url = reverse("admin:billing_linegrant_add")
        query = urlencode({"user": ticket.user_id, **({"line": line.pk} if line else {})})
        return format_html(
            'Asked for “{}”. Current grants: {}. <a href="{}?{}">Grant a line</a> · '
            '<a href="{}?{}">All of this user\'s grants</a>',
            asked or "—",
            granted or "none",
            grant_url,
            query,
            reverse("admin:billing_linegrant_changelist"),
            urlencode({"q": ticket.user.email}),
        )

    @admin.display(description="token")
    def linked_token(self, ticket):
        token = ticket.token
        return format_html(
            '<a href="{}">{}</a> ({})',
            reverse("admin:tokens_token_change", args=[token.pk]),
            token.name,
            token.masked_key,
        )

    @admin.display(description="request")
    def linked_request(self, ticket):
        return format_html(
            '<a href="{}?{}">{}</a>',
            reverse("admin:logs_requestlog_changelist"),
            urlencode({"q": str(ticket.request_id)}),
            ticket.request_id,
        )

    @admin.display(description="the form asked")
    def asked(self, ticket):
        labels = {
            "time": "When",
            "model": "Model",
            "error": "Error",
            "line": "Line",
            "volume": "Volume",
        }
        return format_html_join(
            mark_safe("<br>"),
            "<strong>{}</strong>: {}",
            ((labels.get(key, key), value) for key, value in ticket.details.items()),
        )

    def save_model(self, request, obj, form, change):
        # Status changes and replies go through the services, which email the user: once, as
        # a reply sent with a new status tells of both (the admin saves in one transaction).
        if "assigned_to" in form.changed_data:
            Ticket.objects.filter(pk=obj.pk).update(assigned_to=obj.assigned_to)
        reply, internal = form.cleaned_data.get("reply"), form.cleaned_data["internal"]
        if reply:
            services.ticket_reply(
                ticket=obj,
                author=request.user,
                body=reply,
                attachments=form.cleaned_data["attachments"],
                internal=internal,
            )
        if "status" in form.changed_data:
            services.ticket_set_status(
                ticket=obj,
                status=form.cleaned_data["status"],
                by=request.user,
                notify=not (reply and not internal),
            )

    @admin.action(description="Assign to me", permissions=["change"])
    def assign_to_me(self, request, queryset):
        updated = queryset.update(assigned_to=request.user)
        self.message_user(request, f"{updated} ticket(s) assigned to you.", messages.SUCCESS)

    @admin.action(description="Mark resolved (emails each user)", permissions=["change"])
    def mark_resolved(self, request, queryset):
        done = 0
        for ticket in queryset.exclude(status__in=[Ticket.Status.RESOLVED, Ticket.Status.CLOSED]):
            services.ticket_set_status(
                ticket=ticket, status=Ticket.Status.RESOLVED, by=request.user
            )
            done += 1
        self.message_user(request, f"{done} ticket(s) resolved.", messages.SUCCESS)

    @permission_required("billing.credit_order", "support.view_ticket")
    def credit_order(self, request, pk):
        """Credits the ticket's order by hand, after staff confirm with a reason; the thread
        gets an internal note saying so. The reason stays among staff: the user reads only the
        note meant for them, in their balance history."""
        ticket = get_object_or_404(Ticket.objects.select_related("order", "user"), pk=pk)
        order = ticket.order
        back = reverse("admin:support_ticket_change", args=[ticket.pk])
        if order is None:
            messages.error(request, "This ticket has no order to credit.")
            return redirect(back)
        if not order.is_open:
            status = order.get_status_display().lower()
            messages.warning(request, f"Order {order.number} is already {status}: nothing to do.")
            return redirect(back)
        initial = {"reason": f"Payment confirmed by hand for ticket {ticket.number}."}
        form = StaffNoteForm(request.POST or None, initial=initial)
        if request.method == "POST" and form.is_valid():
            reason, note = form.cleaned_data["reason"], form.cleaned_data["note"]
            try:
                # The credit and its note in the thread stand or fall together.
                with transaction.atomic():
                    credited = billing_services.order_credit(
                        order=order, staff_user=request.user, reason=reason, note=note
                    )
                    if credited:
                        shown = order.entries.values_list("note", flat=True).first()
                        services.ticket_reply(
                            ticket=ticket,
                            author=request.user,
                            body=f"Credited order {order.number} by hand: {reason}\n"
                            f"The user's balance history reads: “{shown}”",
                            internal=True,
                        )
            except billing_services.BillingError as error:
                messages.error(request, str(error))
                return redirect(back)
            if credited:
                messages.success(
                    request,
                    f"Order {order.number} credited: {format_usd(order.amount + order.bonus)} "
                    "added to the balance. Now reply to the user.",
                )
            else:
                messages.warning(
                    request,
                    f"Order {order.number} is already {order.get_status_display().lower()}; "
                    "nothing was credited.",
                )
            return redirect(back)
        return TemplateResponse(
            request,
            "admin/support/ticket_credit_order.html",
            {
                **self.admin_site.each_context(request),
                "title": f"Credit order {order.number} by hand",
                "ticket": ticket,
                "order": order,
                "balance": Account.objects.get(user_id=ticket.user_id).balance,
                "form": form,
                "opts": self.model._meta,
                "back": back,
            },
        )
