from django import forms
from django.contrib import admin, messages

from console.lib.money import format_dollars_plain, format_usd
from tokens import services
from tokens.forms import quota_limit_field
from tokens.models import Token


class TokenAdminForm(forms.ModelForm):
    """What staff may change on a user's token: its name, switch, limit and expiry."""

    quota_limit_usd = quota_limit_field(
        "The most this token may spend in total; ignored with unlimited quota."
    )

    class Meta:
        model = Token
        fields = ["name", "enabled", "unlimited_quota", "expires_at"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.quota_limit:
            self.initial["quota_limit_usd"] = format_dollars_plain(self.instance.quota_limit)

    def clean(self):
        cleaned = super().clean()
        limited = not cleaned.get("unlimited_quota")
        if limited and "quota_limit_usd" not in self.errors and not cleaned.get("quota_limit_usd"):
            self.add_error("quota_limit_usd", "Set a limit in dollars, or tick unlimited quota.")
        return cleaned


@admin.register(Token)
class TokenAdmin(admin.ModelAdmin):
    """Staff see tokens masked, can switch them off and change their limits; no one ever sees
    a full key. The quota spent and held belong to the gateway's settlement alone."""

    list_display = (
        "name",
        "user",
        "masked_key",
        "line",
        "enabled",
        "quota",
        "expires_at",
        "last_used_at",
        "last_ip",
        "deleted_at",
    )
    list_filter = (
        "enabled",
        "line",
        "unlimited_quota",
        ("deleted_at", admin.EmptyFieldListFilter),
    )
    search_fields = ("name", "user__email", "key_prefix", "key_suffix", "last_ip")
    list_select_related = ("user", "line")
    show_full_result_count = False
    form = TokenAdminForm
    fields = (
        "name",
        "user",
        "masked_key",
        "line",
        "enabled",
        "unlimited_quota",
        "quota_limit_usd",
        "quota_used_usd",
        "quota_held_usd",
        "allowed_models",
        "ip_allowlist",
        "expires_at",
        "created_at",
        "rotated_at",
        "last_used_at",
        "last_ip",
        "deleted_at",
    )
    readonly_fields = (
        "user",
        "masked_key",
        "line",
        "quota_used_usd",
        "quota_held_usd",
        "allowed_models",
        "ip_allowlist",
        "created_at",
        "rotated_at",
        "last_used_at",
        "last_ip",
        "deleted_at",
    )
    actions = ["disable"]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        obj.quota_limit = form.cleaned_data["quota_limit_usd"]
        services.token_update(token=obj, fields=TokenAdminForm.Meta.fields)

    @admin.display(description="key")
    def masked_key(self, token):
        return token.masked_key

    @admin.display(description="quota spent")
    def quota_used_usd(self, token):
        return format_usd(token.quota_used)

    @admin.display(description="quota held for requests in flight")
    def quota_held_usd(self, token):
        return format_usd(token.quota_held)

    @admin.display(description="quota")
    def quota(self, token):
        if token.unlimited_quota:
            return f"unlimited ({format_usd(token.quota_used)} spent)"
        return f"{format_usd(token.quota_used)} / {format_usd(token.quota_limit)}"

    @admin.action(description="Disable the selected tokens", permissions=["change"])
    def disable(self, request, queryset):
        count = 0
        for token in queryset.filter(enabled=True):
            services.token_set_enabled(token=token, enabled=False)
            count += 1
        messages.success(request, f"{count} token(s) disabled; the gateway stops accepting them.")
