from django import template

from console.lib.money import format_usd

register = template.Library()


@register.filter
def usd(micros):
    """{{ account.balance|usd }} → $12.50"""
    return format_usd(micros)


@register.filter
def usd_exact(micros):
    """{{ log.cost|usd_exact }} → $0.007500"""
    return format_usd(micros, exact=True)
