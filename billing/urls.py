from django.urls import path

from billing import views

app_name = "billing"

urlpatterns = [
    path("pricing/", views.pricing, name="pricing"),
    path("billing/", views.balance, name="balance"),
    path("billing/recharge/", views.recharge, name="recharge"),
    path("billing/recharge/bonus/", views.bonus_preview, name="bonus_preview"),
    path("billing/redeem/", views.redeem, name="redeem"),
    path("billing/orders/", views.orders, name="orders"),
    path("billing/orders/<str:number>/", views.order_detail, name="order"),
    path("billing/orders/<str:number>/retry/", views.order_retry, name="order_retry"),
    path("billing/sandbox/<str:number>/", views.sandbox_pay, name="sandbox_pay"),
    path("billing/webhooks/<str:provider>/", views.webhook, name="webhook"),
]
