"""Roles, operations and the pure rule deciding which role may do what (§10)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime


class Role(enum.StrEnum):
    ADMIN = "admin"  # accounts, prompts, routing
    REVIEWER = "reviewer"  # search and listen for quality and training
    PRIVACY = "privacy"  # requests, holds, disclosures, retention, audit
    PROCESSOR = "processor"  # subcontractor: maintenance, expiring, listens only if granted
    SYSTEM = "system"  # the service itself (daily retention); never a login


class Operation(enum.StrEnum):
    USERS_MANAGE = "users.manage"
    USERS_LIST = "users.list"
    CONFIG_MANAGE = "config.manage"  # prompts and routing
    AUDIT_SHOW = "audit.show"
    AUDIT_VERIFY = "audit.verify"
    RETENTION_RUN = "retention.run"
    RETENTION_PREVIEW = "retention.preview"
    HOLD_MANAGE = "hold.manage"
    HOLD_LIST = "hold.list"
    REQUEST_OPEN = "request.open"
    REQUEST_LIST = "request.list"
    REQUEST_EXPORT = "request.export"
    REQUEST_ERASE = "request.erase"
    DISCLOSE = "disclose"
    CALL_SEARCH = "call.search"
    CALL_LISTEN = "call.listen"


_ALLOWED: dict[Operation, frozenset[Role]] = {
    Operation.USERS_MANAGE: frozenset({Role.ADMIN}),
    Operation.USERS_LIST: frozenset({Role.ADMIN}),
    Operation.CONFIG_MANAGE: frozenset({Role.ADMIN}),
    Operation.AUDIT_SHOW: frozenset({Role.PRIVACY}),
    Operation.AUDIT_VERIFY: frozenset({Role.PRIVACY, Role.PROCESSOR, Role.SYSTEM}),
    Operation.RETENTION_RUN: frozenset({Role.PRIVACY, Role.SYSTEM}),
    Operation.RETENTION_PREVIEW: frozenset({Role.PRIVACY, Role.PROCESSOR, Role.SYSTEM}),
    Operation.HOLD_MANAGE: frozenset({Role.PRIVACY}),
    Operation.HOLD_LIST: frozenset({Role.PRIVACY}),
    Operation.REQUEST_OPEN: frozenset({Role.PRIVACY}),
    Operation.REQUEST_LIST: frozenset({Role.PRIVACY}),
    Operation.REQUEST_EXPORT: frozenset({Role.PRIVACY}),
    Operation.REQUEST_ERASE: frozenset({Role.PRIVACY}),
    Operation.DISCLOSE: frozenset({Role.PRIVACY}),
    Operation.CALL_SEARCH: frozenset({Role.REVIEWER, Role.PRIVACY}),
    Operation.CALL_LISTEN: frozenset({Role.REVIEWER}),  # + processors holding the grant
}

LOGIN_ROLES = frozenset({Role.ADMIN, Role.REVIEWER, Role.PRIVACY, Role.PROCESSOR})


def permits(roles: frozenset[Role], can_listen: bool, operation: Operation) -> bool:
    """Whether an account with these roles (and listening grant) may do the operation."""
    if roles & _ALLOWED[operation]:
        return True
    return operation is Operation.CALL_LISTEN and Role.PROCESSOR in roles and can_listen


def parse_roles(text: str | list[str]) -> frozenset[Role]:
    """Roles from 'admin,privacy' or a list; raises ValueError on an unknown one."""
    items = text.split(",") if isinstance(text, str) else text
    out = set()
    for item in items:
        name = item.strip().lower()
        if not name:
            continue
        role = Role(name)  # ValueError for unknown names
        if role not in LOGIN_ROLES:
            raise ValueError(f"{name!r} cannot be given to an account")
        out.add(role)
    if not out:
        raise ValueError("at least one role is needed")
    return frozenset(out)


@dataclass(frozen=True)
class Actor:
    """Who is acting: an authenticated account, or the service itself.

    The service layer re-reads an account's roles, state and expiry on every operation, so an
    Actor kept in a web session cannot outlive a role change or an account's expiry."""

    username: str
    roles: frozenset[Role]
    user_id: int | None = None
    can_listen: bool = False
    expires_at: datetime | None = field(default=None, compare=False)

    @property
    def is_system(self) -> bool:
        return self.user_id is None and Role.SYSTEM in self.roles

    @classmethod
    def system(cls, task: str) -> Actor:
        return cls(username=f"system:{task}", roles=frozenset({Role.SYSTEM}))
