from console.celery import app

# The names these tasks were queued under before they moved out of console.tasks.
QUEUED_BEFORE = {
    "console.tasks.fan_out_announcement",
    "console.tasks.send_announcement_batch",
    "console.tasks.send_account_email",
    "console.tasks.send_low_balance_alert",
    "console.tasks.send_sign_in_notice",
    "console.tasks.send_ticket_email",
    "console.tasks.send_ticket_status_email",
}


def test_tasks_queued_before_they_moved_still_find_a_worker(db):  # a worker checks models
    app.loader.import_default_modules()  # what a worker loads when it starts
    assert set(app.tasks) >= QUEUED_BEFORE
