from django.contrib import admin, messages

from tokens import services
from tokens.models import Token


@admin.register(Token)
class TokenAdmin(admin.ModelAdmin):
    """Staff see tokens masked and can switch them off; no one ever sees a full key."""

    list_display = (
        "name",
        "user",
        "masked_key",
        "group",
        "enabled",
        "quota",
        "expires_at",
        "last_used_at",
        "last_ip",
        "deleted_at",
    )
    list_filter = (
        "enabled",
        "group",
        "unlimited_quota",
        ("deleted_at", admin.EmptyFieldListFilter),
    )
    search_fields = ("name", "user__email", "key_prefix", "key_suffix", "last_ip")
    list_select_related = ("user", "group")
    show_full_result_count = False
    fields = (
        "name",
        "user",
        "masked_key",
        "group",
        "enabled",
        "unlimited_quota",
        "quota_limit",
        "quota_used",
        "quota_held",
        "allowed_models",
        "ip_allowlist",
        "expires_at",
        "created_at",
        "rotated_at",
        "last_used_at",
        "last_ip",
        "deleted_at",
    )
    readonly_fields = fields
    actions = ["disable"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return super().has_change_permission(request, obj) if obj is None else False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="key")
    def masked_key(self, token):
        return token.masked_key

    @admin.display(description="quota")
    def quota(self, token):
        from console.lib.money import format_usd

        if token.unlimited_quota:
            return f"unlimited ({format_usd(token.quota_used)} spent)"
        return f"{format_usd(token.quota_used)} / {format_usd(token.quota_limit)}"

    @admin.action(description="Disable the selected tokens")
    def disable(self, request, queryset):
        count = 0
        for token in queryset.filter(enabled=True):
            services.token_set_enabled(token=token, enabled=False)
            count += 1
        messages.success(request, f"{count} token(s) disabled; the gateway stops accepting them.")
