"""The lease protocol between the gateway processes of an installation, over Redis: a process
short of money asks the others to give back what they hold of the same account and do not
use, then tries once more (billing.holds.HoldBook.reserve)."""

import asyncio
import json
import logging
from collections.abc import Iterable
from typing import Any

import redis.asyncio as aioredis

from billing.holds import HoldBook, hold_give_back
from console.lib import invalidation
from relay.database import DatabaseThreads

log = logging.getLogger(__name__)

# How long a process short of money waits for the others to give some back.
GIVE_BACK_WAIT = 0.5


class GiveBackAsk:
    """This process asked others to give back money; these have not answered yet."""

    def __init__(self, owners: Iterable[str]) -> None:
        self.waiting = set(owners)
        self.answered = asyncio.Event()


class Peers:
    """This process's side of the protocol: its asks, and its answers to the others'."""

    def __init__(self, owner: str, db: DatabaseThreads, redis: aioredis.Redis | None) -> None:
        self.owner = owner
        self.db = db
        self.redis = redis
        # (user id, token id) → what this process asked for and waits for
        self.asks: dict[tuple[int, int | None], GiveBackAsk] = {}

    async def ask(self, user_id: int, token_id: int | None, owners: Iterable[str]) -> None:
        """Asks `owners` to give back what they hold of the account (or token quota), and
        returns once they all answered, or after GIVE_BACK_WAIT."""
        if self.redis is None:
            return
        ask = GiveBackAsk(owners)
        self.asks[(user_id, token_id)] = ask
        try:
            await self._publish(
                give_back={
                    "user": user_id,
                    "token": token_id,
                    "by": self.owner,
                    "asked": sorted(ask.waiting),
                }
            )
            await asyncio.wait_for(ask.answered.wait(), GIVE_BACK_WAIT)
        except TimeoutError:
            pass
        finally:
            self.asks.pop((user_id, token_id), None)

    async def give_back(self, book: HoldBook, request: dict[str, Any]) -> None:
        """Another process asked: gives back what this one holds and does not use, if it was
        asked, and says so."""
        if self.owner not in request.get("asked", ()):
            return
        user_id, token_id = request["user"], request.get("token")
        amount = book.give_back(user_id, token_id)
        if amount:
            try:
                await self.db.run(
                    hold_give_back,
                    owner=self.owner,
                    user_id=user_id,
                    token_id=token_id,
                    amount=amount,
                )
            except Exception:
                log.exception("Could not give back held money of user %s", user_id)
                book.undo_give_back(user_id, token_id, amount)
        await self._publish(
            given_back={"user": user_id, "token": token_id, "to": request["by"], "by": self.owner}
        )

    def given_back(self, answer: dict[str, Any]) -> None:
        """Another process answered an ask (of this one, or not)."""
        if answer.get("to") != self.owner:
            return
        ask = self.asks.get((answer["user"], answer.get("token")))
        if ask is not None:
            ask.waiting.discard(answer.get("by"))
            if not ask.waiting:
                ask.answered.set()

    async def _publish(self, **message: Any) -> None:
        if self.redis is None:
            return
        try:
            await self.redis.publish(invalidation.channel(), json.dumps(message))
        except Exception:
            log.warning("Could not reach the other gateway processes", exc_info=True)
