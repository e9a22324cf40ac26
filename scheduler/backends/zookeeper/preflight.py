"""The start-up checks: credentials, and a tree protected by our ACL alone.

**ACLs.** With ``user:password`` in the URL every node Baton creates carries a digest ACL
for that user only, so clients without the credentials can neither read nor delete nor
rewrite the latch or the history (deleting a child needs DELETE on its parent). ZooKeeper
accepts any digest at connect time and refuses it only at use, so :meth:`ZooKeeperPreflight.check`
probes the chroot node and reports a wrong password as
:class:`~scheduler.errors.BackendAuthError`. The first replica to create the chroot sets
its ACL.

**Preflight.** Before a replica joins, :meth:`ZooKeeperPreflight.preflight` creates the election's
nodes (with our ACL) and a probe node and, with credentials, refuses any node of the tree
(chroot, election, latch, runs and each job's runs, controls, members, their children) whose
ACL lets anyone but us change it: a node created earlier without credentials, or squatted
by another client, could hold planted run records that make every tick look claimed, or a
planted latch node that leads forever.
"""

from __future__ import annotations

import uuid
from typing import Any

from kazoo.exceptions import NoAuthError, NoNodeError
from kazoo.security import Permissions, make_digest_acl_credential

from scheduler.backends.zookeeper.paths import TREE, Layout
from scheduler.backends.zookeeper.session import Session
from scheduler.backends.zookeeper.url import ZooKeeperTarget
from scheduler.errors import BackendAuthError, BackendUnprotectedError, printable

# Run nodes per job whose ACL the preflight checks: the newest (zero-padded fire keys sort
# in time order); planted ones that make ticks look claimed sit at the coming fires.
_ACL_SCAN = 100
# What Baton does on its nodes (ADMIN, changing an ACL, it never needs).
_NEEDED = Permissions.READ | Permissions.WRITE | Permissions.CREATE | Permissions.DELETE
_PERMS = (
    (Permissions.CREATE, "c"),
    (Permissions.DELETE, "d"),
    (Permissions.READ, "r"),
    (Permissions.WRITE, "w"),
    (Permissions.ADMIN, "a"),
)


def acl_problem(acls: list[Any], ours: str) -> str | None:
    """Why the ACL ``acls`` does not keep a node for our digest identity ``ours``
    (``user:hash``) alone, or ``None``: another identity may change it (read is fine), or
    we may not read, write, create and delete."""
    user = ours.split(":", 1)[0]
    granted = 0
    intruders = []
    for acl in acls:
        if acl.id.scheme == "digest" and acl.id.id == ours:
            granted |= acl.perms
        elif acl.perms & ~Permissions.READ:
            intruders.append(acl)
    shown = ",".join(acl_text(acl, ours) for acl in acls) or "(none)"
    if intruders:
        first = intruders[0]
        who = "anyone" if first.id.scheme == "world" else acl_text(first, ours)
        return f"has ACL {shown} ({who} may change it, not only user {user!r})"
    if granted & _NEEDED != _NEEDED:
        return f"has ACL {shown} (user {user!r} may not read, write, create and delete)"
    return None


def acl_text(acl: Any, ours: str) -> str:
    """One ACL entry as zkCli shows it (``world:anyone:cdrwa``), without password digests:
    a digest entry shows its user only (and whether it is ours)."""
    perms = "".join(letter for bit, letter in _PERMS if acl.perms & bit) or "-"
    scheme, ident = str(acl.id.scheme), str(acl.id.id)
    if scheme == "digest":
        user = ident.split(":", 1)[0]
        ident = user if ident == ours else f"{user}(another password)"
    return f"{scheme}:{printable(ident[:60])}:{perms}"


class ZooKeeperPreflight:
    """Checks that the credentials work and that the tree is ours alone.

    Args:
        session: the session to probe through.
        layout: the node paths.
        target: the parsed URL (its digest credentials).
    """

    def __init__(self, session: Session, layout: Layout, target: ZooKeeperTarget) -> None:
        self._session = session
        self._layout = layout
        self._target = target

    def check(self) -> None:
        """Connect and probe the chroot node with our credentials.

        ZooKeeper accepts any digest at connect time; a wrong password shows only when a
        node protected by the right one is read. The chroot is not created here: an
        observer must not set its ACL.

        Raises:
            BackendUnavailable: no session within the connection timeout.
            BackendAuthError: the credentials are refused, or missing for a protected chroot.
        """
        session = self._session
        root = self._layout.root
        with session.errors("check"):
            deadline = session.begin()
            user, password = self._target.user, self._target.password
            try:
                if user is None or password is None:
                    session.wait(session.client.get_async(root), deadline, "get")
                    return
                acls, _ = session.wait(session.client.get_acls_async(root), deadline, "getACL")
            except NoNodeError:
                return  # nothing to probe yet; the first replica to create it sets its ACL
            except NoAuthError:
                if user is None:
                    raise BackendAuthError(
                        session.url,
                        f"{root} is protected by a digest ACL: put user:password in the URL",
                    ) from None
                raise BackendAuthError(
                    session.url,
                    f"digest credentials of user {user!r} refused on {root}: wrong password? "
                    "(ZooKeeper accepts any password at connect and refuses it at use)",
                ) from None
            ours = make_digest_acl_credential(user, password)
            same_user = [
                a.id.id
                for a in acls
                if a.id.scheme == "digest" and a.id.id.split(":", 1)[0] == user
            ]
            if same_user and ours not in same_user:
                raise BackendAuthError(
                    session.url,
                    f"digest credentials of user {user!r} do not match the ACL of {root}: "
                    "wrong password?",
                )

    def preflight(self, name: str) -> None:
        """Create the election's nodes and a probe node; with credentials, refuse every node
        of the tree that is not protected by our ACL.

        ``baton run`` calls it before joining. The nodes checked are the chroot, the
        election, its ``latch``, ``runs`` (each job's directory and its newest run nodes),
        ``controls`` and ``members`` with their children, and the ``leader`` note: all of
        them before anything is created, and those that were missing again after. A node
        whose ACL lets another identity than our digest user change it (``world:anyone``,
        an ``ip:`` range, another user, another password of ours) may hold planted run
        records (every tick then looks claimed) or a planted latch node (it leads for ever);
        granting others read only is allowed. A node that does not grant us read, write,
        create and delete would fail at first use, and is refused too.

        Raises:
            BackendUnavailable: no answer in time.
            BackendAuthError: the credentials are refused, or missing for protected nodes.
            BackendUnprotectedError: naming the first such node, its ACL and the fix.
        """
        self.check()
        session = self._session
        election = self._layout.election(name)
        dirs = {f"{election}/{d}": depth for d, depth in TREE.items()}
        user, password = self._target.user, self._target.password
        ours = make_digest_acl_credential(user, password) if user and password else None
        tree = {self._layout.root: 0, election: 0, **dirs, f"{election}/leader": 0}
        with session.errors("preflight"):
            missing = set(tree) if ours is None else self._check_acls(tree, ours)
            deadline = session.begin()
            for path in dirs:
                session.ensure(path, deadline)
            if ours is not None and missing:
                # Created by us just now, unless another client was faster.
                self._check_acls({p: d for p, d in tree.items() if p in missing}, ours)
            deadline = session.begin()
            probe = f"{election}/preflight-{uuid.uuid4().hex}"
            client = session.client
            session.wait(
                client.create_async(probe, b"", acl=session.acl, ephemeral=True),
                deadline,
                "create",
            )
            session.wait(client.set_async(probe, b"probe"), deadline, "set")
            session.wait(client.delete_async(probe), deadline, "delete")

    def _check_acls(self, tree: dict[str, int], ours: str) -> set[str]:
        """Refuse the first node of ``tree`` (path -> how many levels of descendants to
        check too) whose ACL is not ours alone; return the paths that do not exist.

        ``ours`` is our digest identity (``user:hash``). The ACLs and child lists of one
        level are all asked at once: one round trip per level, each within ``op_timeout``.
        Of each job's run nodes only the newest :data:`_ACL_SCAN` are checked (planted ones
        would sit at the coming fires), so a long history does not make the check slow.

        Raises:
            BackendUnprotectedError: naming the first such node, and how many more there are.
        """
        session = self._session
        user = ours.split(":", 1)[0]
        missing: set[str] = set()
        problems: list[tuple[str, str]] = []
        level = list(tree.items())
        while level:
            deadline = session.begin()
            asked = [
                (
                    path,
                    depth,
                    session.client.get_acls_async(path),
                    session.client.get_children_async(path) if depth else None,
                )
                for path, depth in level
            ]
            level = []
            for path, depth, acl_result, children_result in asked:
                try:
                    acls, _ = session.wait(acl_result, deadline, "getACL")
                except NoNodeError:
                    missing.add(path)
                    continue
                except NoAuthError:
                    problems.append((path, f"has an ACL that does not let user {user!r} read it"))
                    continue
                problem = acl_problem(acls, ours)
                if problem is not None:
                    problems.append((path, problem))
                if children_result is None:
                    continue
                try:
                    children = session.wait(children_result, deadline, "getChildren")
                except (NoNodeError, NoAuthError):
                    continue  # gone meanwhile, or unreadable (reported through its ACL)
                if depth == 1 and path.rsplit("/", 2)[-2] == "runs":  # a job's run nodes
                    children = sorted(children, reverse=True)[:_ACL_SCAN]
                level += [(f"{path}/{child}", depth - 1) for child in children]
        if problems:
            path, problem = problems[0]
            more = f"; {len(problems) - 1} more nodes too" if len(problems) > 1 else ""
            raise BackendUnprotectedError(
                session.url,
                path,
                f"node {printable(path[:160])} {problem}{more}: delete it (zkCli: deleteall) "
                f"or, if it holds Baton's own data, protect it (zkCli: addauth digest "
                f"{user}:<password>, then setAcl -R <node> auth::cdrwa)",
            )
        return missing


__all__ = ["ZooKeeperPreflight", "acl_problem", "acl_text"]
