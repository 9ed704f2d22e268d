import io

import pytest
from django.core.management import call_command

from tokens import keys
from tokens.cache import load_snapshot
from tokens.models import Token
from tokens.services import token_create, token_rotate


def test_a_key_is_sk_plus_43_random_characters_and_a_checksum():
    key = keys.generate_key()
    assert key.startswith("sk-")
    assert len(key) == 3 + 43 + 6
    assert keys.looks_valid(key)
    assert len({keys.generate_key() for _ in range(1000)}) == 1000


@pytest.mark.parametrize(
    "typo",
    [
        lambda k: k[:-1],  # a character lost
        lambda k: k[:10] + ("A" if k[10] != "A" else "B") + k[11:],  # one character changed
        lambda k: k[:20] + k[21] + k[20] + k[22:],  # two characters swapped
        lambda k: "sk_" + k[3:],
        lambda k: k + " ",
    ],
)
def test_the_checksum_catches_typos(typo):
    key = keys.generate_key()
    broken = typo(key)
    if broken != key:
        assert not keys.looks_valid(broken)


def test_only_a_hash_of_the_key_is_stored(alice, default_line):
    token, key = token_create(user=alice, name="ci", line=default_line)
    assert token.key_hash == keys.hash_key(key)
    assert token.masked_key == key[:7] + "…" + key[-4:]
    dump = io.StringIO()
    call_command("dumpdata", stdout=dump)
    text = dump.getvalue()
    assert key not in text
    assert key[3:-4] not in text  # not even the middle of it
    assert token.key_hash in text


def test_rotation_replaces_the_key_and_the_old_one_is_unknown(alice, default_line):
    token, old_key = token_create(user=alice, name="ci", line=default_line)
    new_key = token_rotate(token=token)
    assert new_key != old_key
    assert load_snapshot(keys.hash_key(old_key)) is None
    assert load_snapshot(keys.hash_key(new_key)).id == token.pk
    assert Token.objects.get().rotated_at is not None


def test_create_token_command_prints_a_working_key_once(alice, default_line):
    out = io.StringIO()
    call_command("create_token", user=alice.email, name="script", stdout=out)
    key = next(line for line in out.getvalue().splitlines() if line.startswith("sk-"))
    assert load_snapshot(keys.hash_key(key)).name == "script"


def test_create_token_command_refuses_unknown_users_and_lines(alice, default_line):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="No user with the email"):
        call_command("create_token", user="ghost@example.com", name="x")
    with pytest.raises(CommandError, match="No line named 'gold'"):
        call_command("create_token", user=alice.email, name="x", line="gold")


@pytest.mark.parametrize("option", ["--line", "--group"])  # --group: its name before lines
def test_create_token_command_takes_the_line_by_name(alice, default_line, option):
    from billing.models import Line

    Line.objects.create(name="vip")
    call_command("create_token", "--user", alice.email, "--name", "ci", option, "vip", "--quiet")
    assert Token.objects.get(name="ci").line.name == "vip"


# A known key and its hashes as stored by every release so far: the tokens table keeps only
# these, so a change of how the hash is computed must not change a single one of them.
KNOWN_KEY = "sk-Q2xhdWRlU3dpdGNoYm9hcmRLbm93bktleUZvclRlc3Q1SESZW"


def test_a_known_key_keeps_its_stored_hash(settings):
    settings.TOKEN_HASH_KEY = "pinned-token-hash-key"
    settings.TOKEN_HASH_KEY_FALLBACKS = ["old-token-hash-key"]
    settings.SECRET_KEY = "pinned-secret-key"
    settings.SECRET_KEY_FALLBACKS = []
    assert keys.hash_key(KNOWN_KEY) == (
        "90d70574a900bd575d8dba97808acc141dfe500773406bf5e60d87517e294265"
    )
    assert keys.previous_hashes(KNOWN_KEY) == [
        "b679d58ce9e0443aa049a0a6db6b59e8e05215db3681d793a5906409d6974f24",  # the fallback
        "45e64cfcfd5a7fe27adb57a21adcc89df17776ee81a36104b24d82542e8ad78e",  # SECRET_KEY's
    ]
    settings.TOKEN_HASH_KEY = ""
    settings.TOKEN_HASH_KEY_FALLBACKS = []
    assert keys.hash_key(KNOWN_KEY) == (
        "45e64cfcfd5a7fe27adb57a21adcc89df17776ee81a36104b24d82542e8ad78e"
    )
