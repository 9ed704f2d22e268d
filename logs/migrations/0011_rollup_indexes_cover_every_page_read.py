"""The rollups' covering indexes hold the cache token sums and the line too, so that the
dashboard's cards (the share of input read from cache) and the log page's line filter are
index-only reads. Rebuilding them holds the rollups' writes back for as long as it takes (seconds
for millions of rollup rows): migrate in a quiet hour."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("logs", "0010_request_logs_partitioned_by_day"),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name="usageday",
            name="usage_day_user_time",
        ),
        migrations.RemoveIndex(
            model_name="usagehour",
            name="usage_hour_user_time",
        ),
        migrations.RemoveIndex(
            model_name="usageminute",
            name="usage_minute_user_time",
        ),
        migrations.AddIndex(
            model_name="usageday",
            index=models.Index(
                fields=["user_id", "bucket"],
                include=(
                    "ok",
                    "requests",
                    "prompt_tokens",
                    "completion_tokens",
                    "cost",
                    "cache_read_tokens",
                    "cache_write_tokens",
                    "model",
                    "token_id",
                    "line_id",
                ),
                name="usage_day_user_time",
            ),
        ),
        migrations.AddIndex(
            model_name="usagehour",
            index=models.Index(
                fields=["user_id", "bucket"],
                include=(
                    "ok",
                    "requests",
                    "prompt_tokens",
                    "completion_tokens",
                    "cost",
                    "cache_read_tokens",
                    "cache_write_tokens",
                    "model",
                    "token_id",
                    "line_id",
                ),
                name="usage_hour_user_time",
            ),
        ),
        migrations.AddIndex(
            model_name="usageminute",
            index=models.Index(
                fields=["user_id", "bucket"],
                include=(
                    "ok",
                    "requests",
                    "prompt_tokens",
                    "completion_tokens",
                    "cost",
                    "cache_read_tokens",
                    "cache_write_tokens",
                    "model",
                    "token_id",
                    "line_id",
                ),
                name="usage_minute_user_time",
            ),
        ),
    ]
