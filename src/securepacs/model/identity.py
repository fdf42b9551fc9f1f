"""Who a peer is and what it may do: identities, groups, permissions (pure values).

PS3.15 Annex B leaves what a certificate means to site policy; securepacs binds each
client certificate to an identity: organisation, group, allowed calling AE titles. Groups
carry permissions (one per DIMSE service a peer may request, plus media export), and may
carry ``cross_org``: the right to see every organisation's studies (docs/tenants.md), and
``delete``: the right to delete its own organisation's studies, series and instances
(docs/deletion.md). ``all`` includes neither: each must be granted by name (``all`` is what
every certificate gets when trust comes from files, and what existing groups were given
before deletion existed; a destructive right must not arrive by either road).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from securepacs.model.printable import one_line


class Permission(str, enum.Enum):
    ECHO = "echo"
    STORE = "store"
    FIND = "find"
    MOVE = "move"
    GET = "get"
    EXPORT = "export"
    CROSS_ORG = "cross_org"
    DELETE = "delete"

    @classmethod
    def parse_list(cls, text: str | list[str] | tuple[str, ...]) -> frozenset[Permission]:
        """``"echo,store"`` (or a list) -> permissions; ``all`` means every one but
        ``cross_org`` and ``delete`` (which are only ever granted by name).

        Raises
        ------
        ValueError
            An unknown permission name, with the valid names.
        """
        items = text.split(",") if isinstance(text, str) else list(text)
        out: set[Permission] = set()
        for raw in items:
            name = raw.strip().lower()
            if not name:
                continue
            if name == "all":
                out.update(ALL_PERMISSIONS)
                continue
            try:
                out.add(cls(name))
            except ValueError:
                valid = ", ".join(p.value for p in cls)
                raise ValueError(f"unknown permission {raw.strip()!r} (valid: {valid}, all)") from None
        return frozenset(out)


#: Every permission but ``cross_org`` and ``delete`` (the tenant boundary is crossed, and
#: anything deleted, only by a permission granted by name).
ALL_PERMISSIONS = frozenset(p for p in Permission
                            if p not in (Permission.CROSS_ORG, Permission.DELETE))


@dataclass(frozen=True)
class Identity:
    """A verified peer: the certificate it presented and what the trust store binds to it.

    Attributes
    ----------
    name : str
        The certificate's subject common name.
    serial : int
        Certificate serial number (0 for a plain-TCP peer, which has no certificate).
    organization, group : str or None
        From the trust store (or the certificate's O when trust comes from files).
    permissions : frozenset of Permission
    ae_titles : tuple of str
        Calling AE titles this identity may use; empty means any.
    """

    name: str
    serial: int
    organization: str | None = None
    group: str | None = None
    permissions: frozenset[Permission] = field(default_factory=lambda: ALL_PERMISSIONS)
    ae_titles: tuple[str, ...] = ()

    def allows(self, permission: Permission) -> bool:
        return permission in self.permissions

    def may_call_as(self, ae_title: str) -> bool:
        return not self.ae_titles or ae_title.strip() in self.ae_titles

    def describe(self) -> str:
        """``name (org/group, serial 1a2b...)`` for log lines."""
        where = "/".join(p for p in (self.organization, self.group) if p) or "no group"
        return f"{one_line(self.name)} ({one_line(where)}, serial {self.serial:x})"


@dataclass(frozen=True)
class Refusal:
    """Why a peer's certificate is not accepted (logged and audited, never sent)."""

    reason: str
