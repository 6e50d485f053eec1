"""The Responses API's stored conversations: an answer kept for its project's later
`previous_response_id`, and the history such a request continues (docs/http/responses.md)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from llmgw.errors import LedgerError, UnknownResponse
from llmgw.ledger.response_store import ResponseStore, StoredResponse
from llmgw.ledger.store import LedgerStore
from llmgw.types import Completion

log = logging.getLogger("llmgw.gateway")


class Conversations:
    """Keeps and finds a project's stored responses, through the ledger's worker threads."""

    def __init__(self, ledger: LedgerStore, clock: Callable[[], datetime],
                 retention_days: float) -> None:
        self.ledger, self.clock, self.retention_days = ledger, clock, retention_days
        self.store = ResponseStore(ledger.engine)

    async def find(self, project_id: str, response_id: str) -> StoredResponse:
        """The stored response; `UnknownResponse` for any other id, another project's too."""
        found = await self.ledger.run(self.store.get, response_id, project_id, self.clock())
        if found is None:
            raise UnknownResponse(response_id)
        return found

    async def history(self, project_id: str, previous_id: str) -> list[Any]:
        """The input and output items of the response a request continues."""
        previous = await self.find(project_id, previous_id)
        return [*previous.input, *previous.output]

    async def keep(self, agent_id: str, project_id: str, completion: Completion,
                   input_items: list[Any]) -> None:
        """Store an answered (not cached) response with the input that led to it."""
        body = completion.body or {}
        if not body.get("id") or completion.cached:
            return
        now = self.clock()
        stored = StoredResponse(
            id=str(body["id"]), project_id=project_id, agent_id=agent_id,
            request_id=completion.request_id, model_group=completion.model_group,
            deployment_id=completion.deployment, provider=completion.provider, created_at=now,
            expires_at=now + timedelta(days=self.retention_days), input=list(input_items),
            output=list(body.get("output") or []), response=body)
        try:
            await self.ledger.run(self.store.save, stored)
        except LedgerError as exc:
            # The answer is made and billed: it goes to the caller even when its stored copy
            # cannot be written (the ledger down); only a later previous_response_id misses.
            log.warning("request %s: response %s answered but not stored (%s)",
                        completion.request_id, body.get("id"), exc.message)
