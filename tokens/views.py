from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.cache import add_never_cache_headers
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from billing.models import ModelPrice
from console.lib.ratelimit import given_back_on_error, limit_reached
from tokens import services
from tokens.forms import TokenForm
from tokens.models import Token, granted_line_ids


def _get_token_for_user(request, pk):
    return get_object_or_404(Token.objects.of_owner(request.user), pk=pk)


def _row_context(token, granted):
    return {"token": token, "status": token.status_for_owner(granted)}


def _key_page(request, token, key, *, rotated):
    example = ModelPrice.example_chat_model()
    if token.allowed_models and example not in token.allowed_models:
        example = token.allowed_models[0]
    response = render(
        request,
        "tokens/key.html",
        {"token": token, "key": key, "rotated": rotated, "example_model": example},
    )
    # The key is shown once: no cache or back button may keep a copy of the page.
    add_never_cache_headers(response)
    return response


@login_required
def token_list(request):
    granted = granted_line_ids(request.user)
    tokens = Token.objects.alive().filter(user=request.user).select_related("line")
    rows = [_row_context(token, granted) for token in tokens]
    return render(request, "tokens/list.html", {"rows": rows})


def _new_keys_counter(request):
    return f"new-keys:{request.user.pk}"


def _new_keys_refusal(request):
    """Why no new key can be made now, or None. Counts the key it allows: each new or rotated
    key sends an email, and simultaneous requests must not all pass one check."""
    limit = settings.TOKENS_PER_HOUR
    if limit_reached(_new_keys_counter(request), limit=limit, window=3600):
        return f"You made {limit} keys in the last hour. Try again later, or reuse a key."
    return None


@login_required
def token_create(request):
    form = TokenForm(request.POST or None, user=request.user)
    if request.method == "POST" and form.is_valid():
        alive = Token.objects.alive().filter(user=request.user).count()
        refusal = (
            f"You have {alive} tokens, the most an account may have. Delete one you no longer use."
            if alive >= settings.TOKENS_PER_USER
            else _new_keys_refusal(request)
        )
        if refusal:
            form.add_error(None, refusal)
            return render(request, "tokens/form.html", {"form": form, "creating": True})
        data = form.cleaned_data
        with given_back_on_error(_new_keys_counter(request), window=3600):
            token, key = services.token_create(
                user=request.user,
                name=data["name"],
                line=data["line"],
                unlimited_quota=data["unlimited_quota"],
                quota_limit=data["quota_limit_usd"],
                expires_at=data["expires_at"],
                allowed_models=data["allowed_models"],
                ip_allowlist=data["ip_allowlist"],
            )
        return _key_page(request, token, key, rotated=False)
    return render(request, "tokens/form.html", {"form": form, "creating": True})


@login_required
def token_edit(request, pk):
    token = _get_token_for_user(request, pk)
    form = TokenForm(request.POST or None, instance=token, user=request.user)
    if request.method == "POST" and form.is_valid():
        services.token_update(token=form.apply_to(form.save(commit=False)))
        messages.success(request, f"Token “{token.name}” saved.")
        return redirect("tokens:list")
    return render(request, "tokens/form.html", {"form": form, "token": token, "creating": False})


@login_required
@require_POST
def token_toggle(request, pk):
    token = _get_token_for_user(request, pk)
    services.token_set_enabled(token=token, enabled=not token.enabled)
    if request.htmx:
        context = _row_context(token, granted_line_ids(request.user))
        return render(request, "tokens/list.html#token-row", context)
    verb = "enabled" if token.enabled else "disabled"
    messages.success(request, f"Token “{token.name}” {verb}.")
    back = request.POST.get("next", "")
    # Back to the page the button was on (a path: anything else would be taken for the name
    # of a URL), and never to another site.
    if not back.startswith("/") or not url_has_allowed_host_and_scheme(
        back, {request.get_host()}, request.is_secure()
    ):
        back = "tokens:list"
    return redirect(back)


@login_required
@require_POST
def token_rotate(request, pk):
    token = _get_token_for_user(request, pk)
    refusal = _new_keys_refusal(request)
    if refusal:
        messages.error(request, refusal)
        return redirect("tokens:list")
    with given_back_on_error(_new_keys_counter(request), window=3600):
        key = services.token_rotate(token=token)
    return _key_page(request, token, key, rotated=True)


@login_required
def token_delete(request, pk):
    token = _get_token_for_user(request, pk)
    if request.method == "POST":
        services.token_delete(token=token)
        if request.htmx:
            return HttpResponse("")
        messages.success(request, f"Token “{token.name}” deleted. Its key no longer works.")
        return redirect("tokens:list")
    return render(request, "tokens/delete.html", {"token": token})
