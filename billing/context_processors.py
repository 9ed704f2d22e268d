from billing.models import Account


def balance(request):
    """The balance for the top bar of every page."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    amount = Account.objects.filter(user=user).values_list("balance", flat=True).first()
    return {"account_balance": amount or 0}
