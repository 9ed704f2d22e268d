import csv
from datetime import timedelta

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db import transaction
from django.http import HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from billing import services
from billing.forms import (
    PRICE_FIELDS,
    BalanceAdjustForm,
    CallPriceField,
    FailOrderForm,
    PriceChangeFields,
    RedemptionBatchForm,
    RefundForm,
    StaffNoteForm,
)
from billing.models import (
    Account,
    BillingSettings,
    BonusTier,
    LedgerEntry,
    Line,
    LineGrant,
    ModelPrice,
    OrderAction,
    PaymentEvent,
    PriceAdjustment,
    RechargeOrder,
    RedemptionBatch,
    RedemptionCode,
    UnsettledUsage,
)
from billing.pricing import per_million
from console.lib.money import format_dollars_plain, format_usd, format_usd_cost, format_usd_price
from console.lib.permissions import permission_required
from console.lib.streaming import in_chunks


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows written by services only: staff look, never edit."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


def _usd(value):
    return format_usd(value)


def ask_then(request, queryset, *, form_class, title, action, apply, description=""):
    """An admin action that first asks for a reason (and more) on an intermediate page, then
    applies `apply(obj, cleaned_data)` to each selected object."""
    form = form_class(request.POST if "apply" in request.POST else None)
    if form.is_bound and form.is_valid():
        done = 0
        for obj in queryset:
            try:
                apply(obj, form.cleaned_data)
                done += 1
            except services.BillingError as error:
                messages.error(request, f"{obj}: {error}")
        if done:
            messages.success(request, f"{title}: {done} done.")
        return None
    return ask_page(request, queryset, form, title=title, action=action, description=description)


def ask_page(request, queryset, form, *, title, action, description=""):
    return TemplateResponse(
        request,
        "admin/billing/ask_reason.html",
        {
            "title": title,
            "description": description,
            "objects": queryset,
            "form": form,
            "action": action,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "opts": queryset.model._meta,
        },
    )


# Balances


class LedgerInline(admin.TabularInline):
    model = LedgerEntry
    fields = (
        "created_at",
        "kind",
        "amount_usd",
        "balance_after_usd",
        "order",
        "staff_user",
        "reason",
        "note",
    )
    readonly_fields = fields
    ordering = ("-id",)
    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = False
    verbose_name_plural = "latest ledger entries"

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        ids = queryset.order_by("-id").values_list("id", flat=True)[:20]
        return queryset.filter(id__in=list(ids))

    @admin.display(description="amount")
    def amount_usd(self, entry):
        return format_usd_cost(entry.amount)

    @admin.display(description="balance after")
    def balance_after_usd(self, entry):
        return format_usd_cost(entry.balance_after)


@admin.register(Account)
class AccountAdmin(admin.ModelAdmin):
    list_display = ("user", "balance_usd", "held_usd", "recharged_usd", "updated_at")
    search_fields = ("user__email",)
    list_select_related = ("user",)
    readonly_fields = ("user", "balance_usd", "held_usd", "recharged_usd", "updated_at")
    fields = readonly_fields
    inlines = [LedgerInline]
    actions = ["adjust_balance"]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_adjust_balance_permission(self, request):
        return request.user.has_perm("billing.adjust_balance")

    @admin.display(description="balance", ordering="balance")
    def balance_usd(self, account):
        return _usd(account.balance)

    @admin.display(description="held (requests, pending refunds)", ordering="held")
    def held_usd(self, account):
        return _usd(account.held)

    @admin.display(description="recharged in total", ordering="total_recharged")
    def recharged_usd(self, account):
        return _usd(account.total_recharged)

    @admin.action(
        description="Adjust balance (asks for an amount and a reason)",
        permissions=["adjust_balance"],
    )
    def adjust_balance(self, request, queryset):
        def apply(account, data):
            services.balance_adjust(
                user=account.user,
                amount=data["amount"],
                staff_user=request.user,
                reason=data["reason"],
                note=data["note"],
            )

        return ask_then(
            request,
            queryset,
            form_class=BalanceAdjustForm,
            title="Adjust balance",
            action="adjust_balance",
            apply=apply,
            description=(
                "The change is written to each user's ledger. The user sees the amount and the "
                "note in their balance history; the internal reason stays among staff."
            ),
        )


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdmin):
    list_display = (
        "created_at",
        "account",
        "kind",
        "amount_usd",
        "balance_after_usd",
        "order",
        "staff_user",
    )
    list_filter = ("kind", "created_at")
    search_fields = ("account__user__email", "order__number", "reason")
    list_select_related = ("account__user", "order", "staff_user")
    show_full_result_count = False

    @admin.display(description="amount", ordering="amount")
    def amount_usd(self, entry):
        return format_usd_cost(entry.amount)

    @admin.display(description="balance after")
    def balance_after_usd(self, entry):
        return format_usd_cost(entry.balance_after)


# Prices


class PriceChangeAdminForm(forms.ModelForm):
    """A price edit form that also asks why and from when: saving a changed price publishes it
    in an announcement, and it applies from that time (services.price_change)."""

    change_reason = PriceChangeFields.base_fields["change_reason"]
    change_effective_at = PriceChangeFields.base_fields["change_effective_at"]

    def changed_prices(self):
        if self.instance.pk is None:
            return {}
        return {
            PRICE_FIELDS[name]: self.cleaned_data[name]
            for name in PRICE_FIELDS
            if name in self.changed_data and name in self.cleaned_data
        }

    def clean(self):
        super().clean()
        cleaned = self.cleaned_data
        if self.changed_prices():
            if not (cleaned.get("change_reason") or "").strip():
                self.add_error("change_reason", "Say why the price changes: it is published.")
            when = cleaned.get("change_effective_at")
            if when and when < timezone.now().replace(second=0, microsecond=0):
                self.add_error(
                    "change_effective_at",
                    "That time has passed: leave it empty for now, or choose a later time.",
                )
        return cleaned


class PriceChangeAdmin(admin.ModelAdmin):
    """Prices (multipliers, a call's price) are set only by staff who may set prices: they
    alone add a priced row. Changing the prices of a row publishes the change, so it takes
    both setting and publishing prices; others may edit the rest of a row and see its prices
    read-only. A changed price is saved as announced adjustments, never written directly."""

    form = PriceChangeAdminForm
    # Fields that decide what a request costs without being a price themselves.
    pricing_fields: tuple[str, ...] = ()
    # The fields that ask why and from when a price changes.
    change_fields = ("change_reason", "change_effective_at")

    def has_set_prices_permission(self, request):
        return request.user.has_perm("billing.set_prices")

    def may_publish_price_changes(self, request):
        return request.user.has_perms(["billing.set_prices", "billing.publish_prices"])

    def may_change_prices(self, request, obj):
        """A new row's first prices are no price change; an existing row's are published."""
        if obj is None:
            return self.has_set_prices_permission(request)
        return self.may_publish_price_changes(request)

    def has_add_permission(self, request):
        return super().has_add_permission(request) and self.has_set_prices_permission(request)

    def has_delete_permission(self, request, obj=None):
        # A row added again under the same name starts from first prices, never announced: a
        # deletion is a price change, and takes the rights to publish one.
        return super().has_delete_permission(request, obj) and self.may_publish_price_changes(
            request
        )

    def get_fields(self, request, obj=None):
        fields = super().get_fields(request, obj)
        if obj is None or not self.may_change_prices(request, obj):
            fields = [name for name in fields if name not in self.change_fields]
        if obj is not None:
            fields = [*fields, "upcoming_changes"]
        return fields

    def get_readonly_fields(self, request, obj=None):
        readonly = (*super().get_readonly_fields(request, obj), "upcoming_changes")
        if self.may_change_prices(request, obj):
            return readonly
        priced = {*PRICE_FIELDS, *self.pricing_fields}
        return (*readonly, *(name for name in self.fields or () if name in priced))

    @admin.display(description="announced changes")
    def upcoming_changes(self, obj):
        pending = obj.adjustments.filter(applied_at__isnull=True).select_related("announcement")
        if not pending:
            return "None. A changed price is announced, and applies from the time you choose."
        return format_html_join(
            mark_safe("<br>"),
            "{}: {} → {} from {} — {}",
            (
                (
                    adjustment.get_field_display(),
                    _price_value(adjustment.field, adjustment.old_value),
                    _price_value(adjustment.field, adjustment.new_value),
                    f"{timezone.localtime(adjustment.effective_at):%Y-%m-%d %H:%M %Z}",
                    format_html(
                        '<a href="{}">{}</a>',
                        adjustment.announcement.get_absolute_url(),
                        adjustment.announcement,
                    )
                    if adjustment.announcement
                    else "not announced: it waits until published",
                )
                for adjustment in pending.order_by("effective_at", "id")
            ),
        )

    def save_model(self, request, obj, form, change):
        new_prices = form.changed_prices()
        if not new_prices:
            return super().save_model(request, obj, form, change)
        with transaction.atomic():
            # The row's other fields are saved as typed; its prices stay as they are until the
            # adjustments apply.
            current = type(obj).objects.select_for_update().get(pk=obj.pk)
            for name in obj.PRICES:
                setattr(obj, name, getattr(current, name))
            super().save_model(request, obj, form, change)
            adjustments = services.price_change(
                target=current,
                new_values=new_prices,
                reason=form.cleaned_data["change_reason"],
                staff_user=request.user,
                effective_at=form.cleaned_data["change_effective_at"],
            )
        obj.refresh_from_db()
        if not adjustments:
            return None
        announcement = adjustments[0].announcement
        when = adjustments[0].effective_at
        if adjustments[0].applied_at:
            done = "applies now"
        else:
            done = f"applies from {timezone.localtime(when):%Y-%m-%d %H:%M %Z}"
        if announcement is not None:
            messages.success(
                request,
                format_html(
                    'Price change of {} published in <a href="{}">{}</a>; it {}.',
                    obj,
                    announcement.get_absolute_url(),
                    announcement,
                    done,
                ),
            )
        return None


def _price_value(field, value):
    """A price as staff type it: a multiplier, or a call's price in dollars."""
    if field == PriceAdjustment.Field.CALL_PRICE:
        return format_usd_price(int(value))
    return format(value.normalize(), "f")


class LineGrantInline(admin.TabularInline):
    model = LineGrant
    fields = ("user", "note", "granted_by", "created_at")
    readonly_fields = ("granted_by", "created_at")
    autocomplete_fields = ("user",)
    extra = 0


@admin.register(Line)
class LineAdmin(PriceChangeAdmin):
    list_display = ("name", "multiplier", "requires_grant", "is_active", "grant_count", "position")
    list_filter = ("requires_grant", "is_active")
    search_fields = ("name", "description")
    fields = (
        "name",
        "description",
        "multiplier",
        "requires_grant",
        "is_active",
        "position",
        "change_reason",
        "change_effective_at",
    )
    inlines = [LineGrantInline]

    @admin.display(description="grants")
    def grant_count(self, line):
        return line.grants.count()

    def save_formset(self, request, form, formset, change):
        for grant in formset.save(commit=False):
            if grant.granted_by_id is None:
                grant.granted_by = request.user
            grant.save()
        for grant in formset.deleted_objects:
            grant.delete()


@admin.register(LineGrant)
class LineGrantAdmin(admin.ModelAdmin):
    list_display = ("user", "line", "granted_by", "created_at", "note")
    list_filter = ("line",)
    search_fields = ("user__email", "line__name")
    autocomplete_fields = ("user",)
    readonly_fields = ("granted_by", "created_at")

    def save_model(self, request, obj, form, change):
        if obj.granted_by_id is None:
            obj.granted_by = request.user
        super().save_model(request, obj, form, change)


class VendorDefaultsForm(forms.ModelForm):
    """A new model's cache multipliers, left empty, are its vendor's published ratios."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name in ModelPrice.vendor_cache_rates(""):
            if name in self.fields:
                self.fields[name].required = False
                self.fields[name].initial = None
                self.fields[name].help_text += " Empty: the vendor's published ratio."

    def clean(self):
        cleaned = super().clean() or self.cleaned_data
        defaults = ModelPrice.vendor_cache_rates(cleaned.get("vendor") or "")
        for name, value in defaults.items():
            if cleaned.get(name) is None:
                cleaned[name] = value
                setattr(self.instance, name, value)
        return cleaned


@admin.register(ModelPrice)
class ModelPriceAdmin(PriceChangeAdmin):
    list_display = (
        "model",
        "vendor",
        "pricing",
        "model_multiplier",
        "completion_multiplier",
        "call_price_usd",
        "input_per_m",
        "output_per_m",
        "cached_per_m",
        "enabled",
    )
    list_filter = ("vendor", "pricing", "enabled")
    search_fields = ("model", "vendor")
    # Per call or per token, and which model a row prices: a free request is one edit away.
    pricing_fields = ("model", "kind", "pricing")
    fields = (
        "model",
        "vendor",
        "kind",
        "pricing",
        "model_multiplier",
        "completion_multiplier",
        *ModelPrice.PART_MULTIPLIERS,
        "call_price",
        "enabled",
        "change_reason",
        "change_effective_at",
    )

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change, **kwargs)
        if obj is None:
            form = type("NewModelPriceForm", (VendorDefaultsForm, form), {})
        return form

    def get_fields(self, request, obj=None):
        fields = super().get_fields(request, obj)
        if not self.may_change_prices(request, obj):
            fields = ["call_price_usd" if name == "call_price" else name for name in fields]
        return fields

    def get_readonly_fields(self, request, obj=None):
        readonly = (*super().get_readonly_fields(request, obj), "call_price_usd")
        if obj is not None:  # see ModelPrice.PRICES: another model or pricing is a new row
            readonly = (*readonly, *(name for name in ("model", "pricing") if name not in readonly))
        return readonly

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        if db_field.name == "call_price":
            return CallPriceField(
                label="Price per call (USD)",
                help_text="Dollars, to the micro-dollar ($0.000001), e.g. 0.04; "
                "for models priced per call.",
            )
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    @admin.display(description="per call")
    def call_price_usd(self, price):
        return format_usd_price(price.call_price) if price.is_per_call else "—"

    @admin.display(description="input / 1M")
    def input_per_m(self, price):
        return "—" if price.is_per_call else format_usd_price(price.input_per_million())

    @admin.display(description="output / 1M")
    def output_per_m(self, price):
        return "—" if price.is_per_call else format_usd_price(price.output_per_million())

    @admin.display(description="cached input / 1M")
    def cached_per_m(self, price):
        if price.is_per_call:
            return "—"
        return format_usd_price(per_million(price.model_multiplier * price.cache_read_multiplier))


class PublishForm(forms.Form):
    note = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Optional text above the table of changes, e.g. why prices move.",
    )


@admin.register(PriceAdjustment)
class PriceAdjustmentAdmin(ReadOnlyAdmin):
    """Every price change, as recorded by services.price_change: published with it. The action
    publishes those left unannounced (recorded before every change was announced); an
    adjustment applies only once published."""

    list_display = (
        "created_at", "target", "field", "old", "new", "effective_at", "applied_at",
        "announcement", "staff_user", "reason",
    )  # fmt: skip
    list_filter = (
        "field",
        "applied_at",
        "effective_at",
        ("announcement", admin.EmptyFieldListFilter),
    )
    search_fields = ("model_price__model", "line__name", "reason", "batch")
    list_select_related = ("model_price", "line", "staff_user", "announcement")
    actions = ["publish"]

    def has_publish_prices_permission(self, request):
        return request.user.has_perm("billing.publish_prices")

    @admin.display(description="old value", ordering="old_value")
    def old(self, adjustment):
        return _price_value(adjustment.field, adjustment.old_value)

    @admin.display(description="new value", ordering="new_value")
    def new(self, adjustment):
        return _price_value(adjustment.field, adjustment.new_value)

    @admin.action(
        description="Publish selected as one announcement (emails subscribers)",
        permissions=["publish_prices"],
    )
    def publish(self, request, queryset):
        form = PublishForm(request.POST if "apply" in request.POST else None)
        if not (form.is_bound and form.is_valid()):
            return ask_page(
                request,
                queryset,
                form,
                title="Publish price changes",
                action="publish",
                description="One announcement lists every selected change with its old and new "
                "price per million tokens and when it applies; price-change subscribers are "
                "emailed. Changes whose time has passed apply once published.",
            )
        selected = list(queryset)
        try:
            announcement = services.price_adjustments_announce(
                adjustments=selected, staff_user=request.user, note=form.cleaned_data["note"]
            )
        except services.BillingError as error:
            messages.error(request, str(error))
            return None
        applied = services.price_adjustments_apply_due()
        left_out = sum(1 for a in selected if a.announcement != announcement)
        note = f" ({left_out} published before, left out)" if left_out else ""
        now = f"; {applied} applied now, their time having come" if applied else ""
        messages.success(request, f"Published “{announcement}”{note}{now}.")
        return None


@admin.register(BonusTier)
class BonusTierAdmin(admin.ModelAdmin):
    list_display = ("threshold_usd", "percent")

    @admin.display(description="from cumulative recharges of", ordering="threshold")
    def threshold_usd(self, tier):
        return _usd(tier.threshold)


@admin.register(BillingSettings)
class BillingSettingsAdmin(admin.ModelAdmin):
    list_display = ("__str__", "recharge_threshold", "spend_threshold")

    def has_add_permission(self, request):
        return not BillingSettings.objects.exists()

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="enterprise: cumulative recharges from")
    def recharge_threshold(self, obj):
        return _usd(obj.enterprise_recharge_threshold)

    @admin.display(description="enterprise: daily spend from")
    def spend_threshold(self, obj):
        return _usd(obj.enterprise_daily_spend_threshold)


# Recharge orders


class LateOrderFilter(admin.SimpleListFilter):
    title = "age"
    parameter_name = "age"

    def lookups(self, request, model_admin):
        return [
            ("late", "Pending for more than 10 minutes"),
            ("today", "Created in the last 24 hours"),
            ("week", "Created in the last 7 days"),
        ]

    def queryset(self, request, queryset):
        now = timezone.now()
        if self.value() == "late":
            return queryset.filter(
                status__in=[RechargeOrder.Status.PENDING, RechargeOrder.Status.PAID],
                created_at__lt=now - settings.RECHARGE_LATE_AFTER,
            )
        if self.value() == "today":
            return queryset.filter(created_at__gte=now - timedelta(days=1))
        if self.value() == "week":
            return queryset.filter(created_at__gte=now - timedelta(days=7))
        return queryset


class OrderActionInline(admin.TabularInline):
    model = OrderAction
    fields = ("created_at", "action", "staff_user", "reason", "detail")
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False


class PaymentEventInline(admin.TabularInline):
    model = PaymentEvent
    fields = ("received_at", "event_id", "event_type", "outcome", "detail")
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False


@admin.register(RechargeOrder)
class RechargeOrderAdmin(admin.ModelAdmin):
    list_display = (
        "number",
        "user",
        "amount_usd",
        "bonus_usd",
        "provider",
        "status_badge",
        "created_at",
        "age",
    )
    list_filter = ("status", "provider", LateOrderFilter)
    search_fields = ("number", "provider_reference", "payment_reference", "user__email")
    list_select_related = ("user",)
    date_hierarchy = "created_at"
    show_full_result_count = False
    readonly_fields = (
        "number",
        "user",
        "amount_usd",
        "bonus_usd",
        "provider",
        "provider_reference",
        "payment_reference",
        "status",
        "failure_reason",
        "created_at",
        "paid_at",
        "credited_at",
        "failed_at",
        "refunded_at",
        "expired_at",
        "refunded_amount_usd",
    )
    fields = readonly_fields
    inlines = [OrderActionInline, PaymentEventInline]
    actions = ["credit_by_hand", "mark_failed", "refund", "export_csv"]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        # An order is for reading; money moves only through the actions, each with its own
        # permission.
        return False

    def has_credit_order_permission(self, request):
        return request.user.has_perm("billing.credit_order")

    def has_fail_order_permission(self, request):
        return request.user.has_perm("billing.fail_order")

    def has_refund_order_permission(self, request):
        return request.user.has_perm("billing.refund_order")

    def has_export_orders_permission(self, request):
        return request.user.has_perm("billing.export_orders")

    @admin.display(description="amount", ordering="amount")
    def amount_usd(self, order):
        return _usd(order.amount)

    @admin.display(description="bonus", ordering="bonus")
    def bonus_usd(self, order):
        return _usd(order.bonus)

    @admin.display(description="refunded")
    def refunded_amount_usd(self, order):
        return _usd(order.refunded_amount)

    @admin.display(description="status", ordering="status")
    def status_badge(self, order):
        if order.is_late():
            return format_html(
                '<strong class="late-order">{} — late</strong>', order.get_status_display()
            )
        return order.get_status_display()

    @admin.display(description="age")
    def age(self, order):
        minutes = int((timezone.now() - order.created_at).total_seconds() // 60)
        if minutes < 60:
            return f"{minutes} min"
        if minutes < 48 * 60:
            return f"{minutes // 60} h"
        return f"{minutes // 1440} d"

    @admin.action(
        description="Credit by hand (a confirmed late payment)", permissions=["credit_order"]
    )
    def credit_by_hand(self, request, queryset):
        def apply(order, data):
            if not services.order_credit(
                order=order, staff_user=request.user, reason=data["reason"], note=data["note"]
            ):
                raise services.OrderStateError(
                    f"already {order.get_status_display().lower()}, nothing done"
                )

        return ask_then(
            request,
            queryset,
            form_class=StaffNoteForm,
            title="Credit by hand",
            action="credit_by_hand",
            apply=apply,
            description=(
                "Credits each order's amount and bonus once; "
                "an order already credited is left alone. The user sees the note in their "
                "balance history; the internal reason stays among staff."
            ),
        )

    @admin.action(description="Mark failed", permissions=["fail_order"])
    def mark_failed(self, request, queryset):
        def apply(order, data):
            services.order_mark_failed(
                order=order, staff_user=request.user, reason=data["reason"], note=data["note"]
            )

        return ask_then(
            request,
            queryset,
            form_class=FailOrderForm,
            title="Mark failed",
            action="mark_failed",
            apply=apply,
        )

    @admin.action(description="Refund (takes the credit back)", permissions=["refund_order"])
    def refund(self, request, queryset):
        def apply(order, data):
            services.order_refund(
                order=order,
                staff_user=request.user,
                reason=data["reason"],
                note=data["note"],
                force=data["force"],
            )

        return ask_then(
            request,
            queryset,
            form_class=RefundForm,
            title="Refund",
            action="refund",
            apply=apply,
            description=(
                "Debits the amount and bonus each order credited, "
                "and refunds at the payment provider."
            ),
        )

    @admin.action(description="Export selected as CSV", permissions=["export_orders"])
    def export_csv(self, request, queryset):
        class Echo:
            def write(self, value):
                return value

        writer = csv.writer(Echo())
        header = [
            "number",
            "email",
            "amount_usd",
            "bonus_usd",
            "provider",
            "provider_reference",
            "status",
            "created_at",
            "credited_at",
        ]

        def rows():
            yield writer.writerow(header)
            for order in queryset.select_related("user").order_by("-created_at").iterator():
                yield writer.writerow(
                    [
                        order.number,
                        order.user.email,
                        format_dollars_plain(order.amount),
                        format_dollars_plain(order.bonus),
                        order.provider,
                        order.provider_reference,
                        order.status,
                        order.created_at.isoformat(),
                        order.credited_at.isoformat() if order.credited_at else "",
                    ]
                )

        response = StreamingHttpResponse(in_chunks(rows()), content_type="text/csv")
        response["Content-Disposition"] = 'attachment; filename="recharge-orders.csv"'
        return response


@admin.register(PaymentEvent)
class PaymentEventAdmin(ReadOnlyAdmin):
    list_display = (
        "received_at",
        "provider",
        "event_type",
        "event_id",
        "order",
        "outcome",
        "detail",
    )
    list_filter = ("provider", "outcome")
    search_fields = ("event_id", "order__number", "detail")
    list_select_related = ("order",)
    show_full_result_count = False


@admin.register(OrderAction)
class OrderActionAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "order", "action", "staff_user", "reason", "detail")
    list_filter = ("action",)
    search_fields = ("order__number", "reason", "staff_user__email")
    list_select_related = ("order", "staff_user")


# Redemption codes


class RedemptionCodeInline(admin.TabularInline):
    model = RedemptionCode
    fields = ("hint", "redeemed_by", "redeemed_at", "voided")
    # Codes are withdrawn by the batch's action (its own permission), never one by one here.
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False


@admin.register(RedemptionBatch)
class RedemptionBatchAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "amount_usd",
        "count",
        "redeemed",
        "expires_at",
        "created_by",
        "created_at",
    )
    search_fields = ("name",)
    readonly_fields = ("name", "amount_usd", "count", "expires_at", "created_by", "created_at")
    fields = readonly_fields
    inlines = [RedemptionCodeInline]
    actions = ["void_unused"]

    @admin.display(description="amount per code")
    def amount_usd(self, batch):
        return _usd(batch.amount)

    @admin.display(description="redeemed")
    def redeemed(self, batch):
        return batch.codes.filter(redeemed_at__isnull=False).count()

    def has_add_permission(self, request):
        # "Add" opens the page that issues codes.
        return self.has_issue_codes_permission(request)

    def has_delete_permission(self, request, obj=None):
        return False

    def has_issue_codes_permission(self, request):
        return request.user.has_perm("billing.issue_codes")

    def has_void_codes_permission(self, request):
        return request.user.has_perm("billing.void_codes")

    def get_urls(self):
        return [
            path(
                "create/",
                self.admin_site.admin_view(self.create_batch),
                name="billing_redemptionbatch_create",
            ),
            *super().get_urls(),
        ]

    def add_view(self, request, form_url="", extra_context=None):
        return redirect("admin:billing_redemptionbatch_create")

    @permission_required("billing.issue_codes")
    def create_batch(self, request):
        form = RedemptionBatchForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            batch, text = services.redemption_batch_create(
                name=data["name"],
                amount=data["amount"],
                count=data["count"],
                expires_at=data["expires_at"],
                staff_user=request.user,
            )
            response = HttpResponse(text, content_type="text/csv")
            response["Content-Disposition"] = f'attachment; filename="codes-{batch.pk}.csv"'
            return response
        return TemplateResponse(
            request,
            "admin/billing/redemption_batch_create.html",
            {
                **self.admin_site.each_context(request),
                "title": "Create redemption codes",
                "form": form,
                "opts": self.model._meta,
                "batches_url": reverse("admin:billing_redemptionbatch_changelist"),
            },
        )

    @admin.action(description="Withdraw the unused codes", permissions=["void_codes"])
    def void_unused(self, request, queryset):
        count = RedemptionCode.objects.filter(batch__in=queryset, redeemed_at__isnull=True).update(
            voided=True
        )
        messages.success(request, f"{count} unused code(s) withdrawn.")


class SettledFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [("waiting", "Waiting"), ("settled", "Settled")]

    def queryset(self, request, queryset):
        if self.value() == "waiting":
            return queryset.filter(settled_at__isnull=True)
        if self.value() == "settled":
            return queryset.filter(settled_at__isnull=False)
        return queryset


@admin.register(UnsettledUsage)
class UnsettledUsageAdmin(ReadOnlyAdmin):
    """Usage the database refused to settle. The gateway keeps it and retries on its own; the
    error says what to fix (a constraint, a value out of range). Its money stays held."""

    list_display = (
        "user",
        "state",
        "requests",
        "amount_usd",
        "error",
        "attempts",
        "first_refused_at",
        "last_refused_at",
        "owner",
    )
    list_filter = (SettledFilter,)
    search_fields = ("user__email", "owner", "error")
    list_select_related = ("user",)

    @admin.display(description="state", ordering="settled_at")
    def state(self, row):
        if row.settled_at:
            return f"settled {row.settled_at:%Y-%m-%d %H:%M}"
        return "waiting: retried automatically"

    @admin.display(description="amount", ordering="amount")
    def amount_usd(self, row):
        return _usd(row.amount)
