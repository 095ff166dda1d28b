"""The access policy: every (role, permission) pair against a table written out by hand."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.domain.access import (
    PLATFORM_PERMISSIONS,
    PLATFORM_ROLES,
    PRINCIPAL_PERMISSIONS,
    ROLE_PERMISSIONS,
    TENANT_ROLES,
    Permission,
    Role,
    allowed,
    permissions_of,
)

# Read across: A = admin, M = event_manager, V = event_viewer, P = event_producer,
# X = platform_admin. "y" allows, "." denies. DOMAIN.md: admin is everything in its
# tenant; event_manager creates/reads/updates events, receivers, groups and
# subscriptions; event_viewer reads; event_producer creates events, reads receivers
# and reads groups (their status and completions: a pipeline waits on its gate);
# platform administrators manage tenants, and the principals and audit log of the
# scope they act in (the platform, or a tenant they name), never its events.
MATRIX = """
permission              A M V P X
events:create           y y . y .
events:read             y y y . .
receivers:create        y y . . .
receivers:read          y y y y .
groups:create           y y . . .
groups:read             y y y y .
groups:update           y y . . .
groups:delete           y . . . .
subscriptions:create    y y . . .
subscriptions:read      y y y . .
subscriptions:update    y y . . .
subscriptions:delete    y . . . .
users:manage            y . . . y
api_keys:manage         y . . . y
audit:read              y . . . y
tenants:manage          . . . . y
secrets:manage          . . . . y
metrics:read            . . . . y
"""
COLUMNS = {
    "A": Role.ADMIN,
    "M": Role.EVENT_MANAGER,
    "V": Role.EVENT_VIEWER,
    "P": Role.EVENT_PRODUCER,
    "X": Role.PLATFORM_ADMIN,
}


def _table() -> dict[tuple[Role, str], bool]:
    lines = MATRIX.strip().splitlines()
    heads = lines[0].split()[1:]
    table: dict[tuple[Role, str], bool] = {}
    for line in lines[1:]:
        name, *cells = line.split()
        assert len(cells) == len(heads), line
        for head, cell in zip(heads, cells, strict=True):
            assert cell in {"y", "."}, line
            table[(COLUMNS[head], name)] = cell == "y"
    return table


TABLE = _table()


def test_table_covers_every_role_and_permission() -> None:
    assert {p for _, p in TABLE} == {str(p) for p in Permission}
    assert {r for r, _ in TABLE} == set(Role)
    assert set(ROLE_PERMISSIONS) == set(Role)


@pytest.mark.parametrize(("role", "permission"), list(itertools.product(Role, Permission)), ids=str)
def test_matrix(role: Role, permission: Permission) -> None:
    expected = TABLE[(role, str(permission))]
    assert allowed([role], permission) is expected
    assert (permission in ROLE_PERMISSIONS[role]) is expected
    assert allowed([str(role)], permission) is expected


def test_permission_names() -> None:
    for permission in Permission:
        resource, _, action = permission.partition(":")
        assert resource, permission
        assert action, permission
    assert Permission("events:create") is Permission.EVENTS_CREATE


def test_no_role_grants_nothing() -> None:
    assert permissions_of([]) == frozenset()
    assert not any(allowed([], p) for p in Permission)


def test_unknown_roles_grant_nothing() -> None:
    assert permissions_of(["root", "ADMIN", "admin ", "*"]) == frozenset()
    assert permissions_of(["root", "event_viewer"]) == ROLE_PERMISSIONS[Role.EVENT_VIEWER]


def test_platform_and_tenant_roles_split() -> None:
    assert set(Role) == TENANT_ROLES | PLATFORM_ROLES
    assert not TENANT_ROLES & PLATFORM_ROLES
    for role in TENANT_ROLES:
        assert not ROLE_PERMISSIONS[role] & PLATFORM_PERMISSIONS
    for role in PLATFORM_ROLES:
        assert ROLE_PERMISSIONS[role] <= PLATFORM_PERMISSIONS | PRINCIPAL_PERMISSIONS
        data = {"events", "receivers", "groups", "subscriptions"}
        assert not {p for p in ROLE_PERMISSIONS[role] if p.partition(":")[0] in data}


def test_admin_has_every_tenant_permission() -> None:
    assert ROLE_PERMISSIONS[Role.ADMIN] == frozenset(Permission) - PLATFORM_PERMISSIONS


def test_the_table_is_read_only() -> None:
    with pytest.raises(TypeError):
        ROLE_PERMISSIONS[Role.EVENT_VIEWER] = frozenset(Permission)  # type: ignore[index]


@given(st.sets(st.sampled_from(list(Role))), st.sampled_from(list(Permission)))
def test_roles_combine_as_a_union(roles: set[Role], permission: Permission) -> None:
    assert allowed(roles, permission) == any(TABLE[(r, str(permission))] for r in roles)
