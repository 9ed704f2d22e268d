"""The playground: chat with a model through one of your tokens, from the console.

The page is here; its chats go to CHAT_PATH, which the gateway serves (relay.playground, sent
there by console.asgi), so that a chat is authorised, held, billed and logged exactly as an
API request with that token is. The console never knows a token's key (it keeps its hash):
the gateway takes the token of a signed-in owner by its hash instead of a key.
"""

from django import forms
from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from django.urls import reverse

from billing.models import ModelPrice
from tokens.models import Token, granted_line_ids

CHAT_PATH = "/playground/chat/"
ROLES = ("system", "user", "assistant")
MAX_MESSAGES = 50
MAX_CONTENT = 32_000  # characters of one message


class ChatForm(forms.Form):
    """A chat sent from the playground: which token, which model, and the conversation."""

    token = forms.IntegerField(min_value=1)
    model = forms.CharField(max_length=200)
    messages = forms.JSONField()

    def clean_messages(self):
        messages = self.cleaned_data["messages"]
        if not isinstance(messages, list) or not messages:
            raise forms.ValidationError("Write a message first.")
        if len(messages) > MAX_MESSAGES:
            raise forms.ValidationError(
                f"A conversation here holds at most {MAX_MESSAGES} messages: clear it to go on."
            )
        cleaned = []
        for message in messages:
            role = message.get("role") if isinstance(message, dict) else None
            content = message.get("content") if isinstance(message, dict) else None
            if role not in ROLES or not isinstance(content, str):
                raise forms.ValidationError("Each message needs a role and a text.")
            if len(content) > MAX_CONTENT:
                raise forms.ValidationError(
                    f"A message here holds at most {MAX_CONTENT:,} characters."
                )
            if content.strip():
                cleaned.append({"role": role, "content": content})
        if not cleaned or cleaned[-1]["role"] != "user":
            raise forms.ValidationError("The last message must be yours: write one first.")
        return cleaned


def chat_request(form):
    """The chat completion request a valid form makes: streamed, with its usage at the end."""
    return {
        "model": form.cleaned_data["model"],
        "messages": form.cleaned_data["messages"],
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def _token_choices(user):
    """The user's tokens, each with the chat models it may call (all priced chat models, or
    those its allowed list names), and its status when it cannot be used."""
    chat_models = list(
        ModelPrice.objects.filter(enabled=True, kind=ModelPrice.Kind.CHAT)
        .order_by("model")
        .values_list("model", flat=True)
    )
    granted = granted_line_ids(user)
    choices = []
    for token in Token.objects.of_owner(user).order_by("name"):
        allowed = set(token.allowed_models)
        status = token.status_for_owner(granted)
        choices.append(
            {
                "id": token.pk,
                "name": token.name,
                "status": "" if status.usable else status.label,
                "models": [m for m in chat_models if not allowed or m in allowed],
            }
        )
    return choices


@login_required
def playground(request):
    tokens = _token_choices(request.user)
    placeholder = "REQUEST_ID"
    example_model = ModelPrice.example_chat_model()
    return render(
        request,
        "console/playground.html",
        {
            "tokens": tokens,
            "example_model": example_model,
            "playground": {
                "chat_url": CHAT_PATH,
                "api_base": settings.SITE_URL + "/v1",
                "breakdown_url": reverse("logs:breakdown", args=[placeholder]),
                "placeholder": placeholder,
                "tokens": tokens,
                "example_model": example_model,
            },
        },
    )
