"""Tickets, announcements and email deliveries now belong to the apps that took their tables
over (support, announcements, accounts): the console app forgets them. State only."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0004_emaildelivery"),
        ("announcements", "0001_initial"),
        ("billing", "0008_priceadjustment_announcement_moved"),
        ("console", "0005_staff_roles"),
        ("support", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.DeleteModel(name="TicketAttachment"),
                migrations.DeleteModel(name="TicketMessage"),
                migrations.DeleteModel(name="Ticket"),
                migrations.DeleteModel(name="Announcement"),
                migrations.DeleteModel(name="EmailDelivery"),
            ]
        ),
    ]
