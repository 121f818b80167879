"""Store exceptions: one base class so the CLI and the DAGs can report them uniformly."""

from __future__ import annotations


class StoreError(RuntimeError):
    """A store operation failed for a reason the caller can act on (message says how)."""


class SchemaNotReadyError(StoreError):
    """The database schema is missing or behind this code: run ``traitflow db upgrade``."""


class MigrationError(StoreError):
    """A migration could not be applied, or the database does not match the migration files."""


class StoreInputError(StoreError, ValueError):
    """Data handed to the store violates the storage contract (e.g. NUL characters, bad shapes)."""


class ModelStateError(StoreError):
    """A model-version transition is not allowed (e.g. promoting a rejected model)."""


class ModelRejectedError(ModelStateError):
    """The model version is ``rejected`` (by the quality gate, or superseded by a newer candidate
    before its run promoted it): no retry can promote it; a new run fits a new candidate."""


class NotFoundError(StoreError, LookupError):
    """A requested model version, customer or trait does not exist."""


class DatabaseTimeoutError(StoreError):
    """The server did not answer within the client deadline; the connection was closed.

    Raised when a server is frozen or unreachable (it cannot enforce its own statement_timeout
    then). Nothing of the open transaction is committed unless the deadline hit during COMMIT;
    a retry once the server answers again is safe (Traitflow's writes are idempotent).
    """


class DatabaseConnectionLostError(StoreError):
    """The connection to the server was lost during a call (server shut down or restarted, socket
    closed); the connection is closed and the next call of the ``Store`` opens a new one.

    The open transaction was rolled back by the server, unless the loss hit during COMMIT: then it
    may or may not have committed. A retry is safe either way (Traitflow's writes are idempotent).
    ``target`` is the masked URL and ``reason`` the redacted driver message: no password in either.
    """

    def __init__(self, target: str, reason: str, *, during_commit: bool = False) -> None:
        outcome = (
            "The connection was lost during COMMIT: the transaction may or may not have committed;"
            " Traitflow's writes are idempotent, so a retry is safe either way."
            if during_commit
            else "The transaction was not committed (the server rolls it back); a retry is safe."
        )
        super().__init__(
            f"the connection to {target} was lost ({reason}): the server shut down, restarted or"
            f" closed the connection. {outcome} Retry the call: it opens a new connection."
        )
        self.target = target
        self.reason = reason
        self.during_commit = during_commit


class StaleModelError(ModelStateError):
    """A profile batch was computed with a model that is no longer the one selected for its date.

    Raised inside the write transaction (nothing is written) when a newer model was promoted for
    ``as_of`` after the batch's model was picked: the caller recomputes with ``selected`` or skips.
    """

    def __init__(self, as_of: object, model_version: int, selected: int | None) -> None:
        super().__init__(
            f"profiles as of {as_of} were computed with model {model_version}, but model {selected}"
            " is now the one selected for that date (promoted meanwhile): recompute with it"
        )
        self.as_of = as_of
        self.model_version = model_version
        self.selected = selected
