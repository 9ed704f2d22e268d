from allauth.account.admin import EmailAddressAdmin as AllauthEmailAddressAdmin
from allauth.account.models import EmailAddress
from allauth.mfa.admin import AuthenticatorAdmin as AllauthAuthenticatorAdmin
from allauth.mfa.models import Authenticator
from django.contrib import admin
from django.contrib.auth.admin import GroupAdmin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.contrib.auth.forms import AdminUserCreationForm, UserChangeForm
from django.contrib.auth.models import Group as StaffGroup
from django.urls import reverse
from django.utils.html import format_html

from accounts.models import EmailDelivery, User
from console.lib.permissions import permission_required

# Who may do what in the staff console is given by superusers alone: a staff user who could
# tick these boxes could give themselves every other permission.
PRIVILEGE_FIELDS = ("is_staff", "is_superuser", "groups")


class UserCreationForm(AdminUserCreationForm):
    class Meta:
        model = User
        fields = ("email",)


class UserEditForm(UserChangeForm):
    class Meta:
        model = User
        fields = "__all__"


def _guards_a_staff_account(request, user):
    """True when `user` is staff and the one asking is not a superuser: a staff account's email
    address, password or second factor in other hands is the account itself."""
    return (
        user is not None and (user.is_staff or user.is_superuser) and not request.user.is_superuser
    )


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    form = UserEditForm
    add_form = UserCreationForm
    list_display = ("email", "name", "is_staff", "is_active", "date_joined", "last_login")
    list_filter = ("is_staff", "is_active", "date_joined")
    search_fields = ("email", "name")
    ordering = ("-date_joined",)
    readonly_fields = ("date_joined", "last_login", "balance")
    fieldsets = (
        (None, {"fields": ("email", "password", "balance")}),
        ("Profile", {"fields": ("name", "time_zone")}),
        ("Permissions", {"fields": ("is_active", "is_staff", "is_superuser", "groups")}),
        ("Dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = ((None, {"classes": ("wide",), "fields": ("email", "password1", "password2")}),)
    filter_horizontal = ("groups",)

    def has_change_permission(self, request, obj=None):
        if _guards_a_staff_account(request, obj):
            return False
        return super().has_change_permission(request, obj)

    def get_readonly_fields(self, request, obj=None):
        readonly = super().get_readonly_fields(request, obj)
        if request.user.is_superuser or obj is None:
            return readonly
        return (*readonly, *PRIVILEGE_FIELDS)

    @permission_required("accounts.change_user")
    def user_change_password(self, request, id, form_url=""):
        return super().user_change_password(request, id, form_url)

    @admin.display(description="balance")
    def balance(self, user):
        """Read-only here: balances change only through the ledger (Accounts → Adjust balance)."""
        from console.lib.money import format_usd

        account = getattr(user, "account", None)
        if account is None:
            return "—"
        url = reverse("admin:billing_account_change", args=[account.pk])
        return format_html('<a href="{}">{}</a>', url, format_usd(account.balance))


# allauth's own admin, with its action under the permission it needs.
admin.site.unregister(EmailAddress)


@admin.register(EmailAddress)
class EmailAddressAdmin(AllauthEmailAddressAdmin):
    def has_add_permission(self, request):
        # The form lets one pick any user, staff included.
        return request.user.is_superuser

    def has_change_permission(self, request, obj=None):
        if obj is not None and _guards_a_staff_account(request, obj.user):
            return False
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        if obj is not None and _guards_a_staff_account(request, obj.user):
            return False
        return super().has_delete_permission(request, obj)

    @admin.action(description="Mark selected email addresses as verified", permissions=["change"])
    def make_verified(self, request, queryset):
        if not request.user.is_superuser:
            queryset = queryset.filter(user__is_staff=False, user__is_superuser=False)
        return super().make_verified(request, queryset)


admin.site.unregister(Authenticator)


@admin.register(Authenticator)
class AuthenticatorAdmin(AllauthAuthenticatorAdmin):
    """Seen, and removed for someone who lost their phone; never made or moved here."""

    # Its data is the user's TOTP secret and recovery codes: no one reads them here.
    exclude = ("data",)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        if obj is not None and _guards_a_staff_account(request, obj.user):
            return False
        return super().has_delete_permission(request, obj)


admin.site.unregister(StaffGroup)


@admin.register(StaffGroup)
class StaffGroupAdmin(GroupAdmin):
    """Groups are staff rights: given by superusers alone, like the rights on a user."""

    def has_add_permission(self, request):
        return request.user.is_superuser

    def has_change_permission(self, request, obj=None):
        return request.user.is_superuser

    def has_delete_permission(self, request, obj=None):
        return request.user.is_superuser


@admin.register(EmailDelivery)
class EmailDeliveryAdmin(admin.ModelAdmin):
    list_display = (
        "created_at",
        "template",
        "recipient",
        "status",
        "attempts",
        "sent_at",
        "last_error",
    )
    list_filter = ("status", "template")
    search_fields = ("recipient", "key")
    show_full_result_count = False

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
