"""Who may do what: permissions, roles, and the role -> permissions table as data.

The table below is the whole access policy (DOMAIN.md, "Identity and access").
Every route declares one `Permission`; a principal is allowed when one of its
roles grants it. Nothing else grants anything: an unknown role grants nothing,
no role grants everything.

Tenant roles act inside the principal's own tenant (tenant isolation is the
store's and the use cases' business: another tenant's object is a 404 before
any permission is asked). `platform_admin` belongs to no tenant: it manages
tenants and platform secrets, and the principals and audit log of the scope it
acts in (the platform itself, or a tenant it names with `X-Tenant`): that is how
a new tenant gets its first administrator. It never reads or writes a tenant's
events, receivers, groups or subscriptions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from types import MappingProxyType

__all__ = [
    "PLATFORM_PERMISSIONS",
    "PLATFORM_ROLES",
    "PRINCIPAL_PERMISSIONS",
    "ROLE_PERMISSIONS",
    "TENANT_ROLES",
    "Permission",
    "Role",
    "allowed",
    "permissions_of",
]


class Permission(StrEnum):
    EVENTS_CREATE = "events:create"
    EVENTS_READ = "events:read"
    RECEIVERS_CREATE = "receivers:create"
    RECEIVERS_READ = "receivers:read"
    GROUPS_CREATE = "groups:create"
    GROUPS_READ = "groups:read"
    GROUPS_UPDATE = "groups:update"
    GROUPS_DELETE = "groups:delete"
    SUBSCRIPTIONS_CREATE = "subscriptions:create"
    SUBSCRIPTIONS_READ = "subscriptions:read"
    SUBSCRIPTIONS_UPDATE = "subscriptions:update"
    SUBSCRIPTIONS_DELETE = "subscriptions:delete"
    USERS_MANAGE = "users:manage"
    API_KEYS_MANAGE = "api_keys:manage"
    AUDIT_READ = "audit:read"
    TENANTS_MANAGE = "tenants:manage"
    SECRETS_MANAGE = "secrets:manage"
    METRICS_READ = "metrics:read"


class Role(StrEnum):
    ADMIN = "admin"
    EVENT_MANAGER = "event_manager"
    EVENT_VIEWER = "event_viewer"
    EVENT_PRODUCER = "event_producer"
    PLATFORM_ADMIN = "platform_admin"


#: Permissions that act on the platform, not inside one tenant.
PLATFORM_PERMISSIONS: frozenset[Permission] = frozenset(
    {Permission.TENANTS_MANAGE, Permission.SECRETS_MANAGE, Permission.METRICS_READ}
)

_P = Permission

#: Managing principals and reading the audit log: in a tenant for its `admin`, in the
#: scope it acts in for a platform administrator.
PRINCIPAL_PERMISSIONS: frozenset[Permission] = frozenset(
    {Permission.USERS_MANAGE, Permission.API_KEYS_MANAGE, Permission.AUDIT_READ}
)

#: The access policy. `admin` is everything inside its tenant; `event_manager`
#: creates, reads and updates events, receivers, groups and subscriptions (DOMAIN.md
#: names no delete for it: deleting a gate or a subscription is an admin's act);
#: `event_viewer` reads; `event_producer` records events, reads receivers, and reads
#: groups with their status and completions (a pipeline waits on its gate with the key
#: that records its events).
ROLE_PERMISSIONS: Mapping[Role, frozenset[Permission]] = MappingProxyType(
    {
        Role.ADMIN: frozenset(Permission) - PLATFORM_PERMISSIONS,
        Role.EVENT_MANAGER: frozenset(
            {
                _P.EVENTS_CREATE,
                _P.EVENTS_READ,
                _P.RECEIVERS_CREATE,
                _P.RECEIVERS_READ,
                _P.GROUPS_CREATE,
                _P.GROUPS_READ,
                _P.GROUPS_UPDATE,
                _P.SUBSCRIPTIONS_CREATE,
                _P.SUBSCRIPTIONS_READ,
                _P.SUBSCRIPTIONS_UPDATE,
            }
        ),
        Role.EVENT_VIEWER: frozenset(
            {_P.EVENTS_READ, _P.RECEIVERS_READ, _P.GROUPS_READ, _P.SUBSCRIPTIONS_READ}
        ),
        Role.EVENT_PRODUCER: frozenset({_P.EVENTS_CREATE, _P.RECEIVERS_READ, _P.GROUPS_READ}),
        Role.PLATFORM_ADMIN: PLATFORM_PERMISSIONS | PRINCIPAL_PERMISSIONS,
    }
)

#: Roles a principal of a tenant may hold, and roles of principals without one.
TENANT_ROLES: frozenset[Role] = frozenset(
    {Role.ADMIN, Role.EVENT_MANAGER, Role.EVENT_VIEWER, Role.EVENT_PRODUCER}
)
PLATFORM_ROLES: frozenset[Role] = frozenset({Role.PLATFORM_ADMIN})


def permissions_of(roles: Iterable[Role | str]) -> frozenset[Permission]:
    """Every permission any of `roles` grants; a name that is no role grants nothing."""
    granted: set[Permission] = set()
    for name in roles:
        try:
            role = Role(name)
        except ValueError:
            continue
        granted |= ROLE_PERMISSIONS[role]
    return frozenset(granted)


def allowed(roles: Iterable[Role | str], permission: Permission) -> bool:
    """Whether one of `roles` grants `permission`."""
    return permission in permissions_of(roles)
