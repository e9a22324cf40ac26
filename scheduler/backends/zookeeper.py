"""The ZooKeeper backend: Apache Curator's LeaderLatch on kazoo, claims in transactions.

Node layout, under the chroot ``R`` of the URL (default ``/baton``) and per election ``N``::

    R/N/latch/<guid>-latch-<seq>  ephemeral sequential, one per replica taking part; data:
                                  {holder: sha256(holder id), replica, host, since}
    R/N/runs/<job>/<fire key>     persistent, the RunRecord JSON of one claimed fire (its
                                  attempt and state live in the JSON)

**Latch.** :meth:`ZooKeeperBackend.try_acquire` creates the holder's latch node once and
keeps it: the holder is queued. The node with the lowest sequence number leads; once lowest it
stays lowest until it is deleted, because sequence numbers only grow and deleted ephemeral
nodes never come back. A follower watches only its predecessor (no herd effect), so
:meth:`~ZooKeeperBackend.wait_for_change` returns as soon as that node is deleted. The leader
watches its own node: deletion or rewriting by anyone ends the lease at once through
:meth:`~ZooKeeperBackend.watch`. Node names carry a fresh GUID (Curator's "protected" mode), so
a create whose reply was lost is found and adopted by the next attempt instead of lingering
as an orphan ahead of everyone. A lease of this backend belongs to this instance's session.

**Fencing token: the czxid of the leader's latch node**, the zxid of the transaction that
created it. zxids are issued by the ZooKeeper leader in one total order (epoch in the high 32
bits, a counter in the low ones; every new ZooKeeper leader starts a higher epoch), are
persisted in the transaction log, and a later transaction always has a larger one. A node
leading after node A was either queued behind A while A led (so it was created after A: a
larger sequence number comes from a later transaction) or created after A was already
lowest; either way its czxid is larger. Only a ZooKeeper that lost its transaction log could
go back, which loses every other guarantee too.

**Connection states** (kazoo's vocabulary, Curator's policy):

* ``CONNECTED``: requests are answered; a leader may claim (the claim transaction itself
  re-checks the latch node).
* ``SUSPENDED``: the connection dropped; the session, and our node, may still be alive on the
  server or may expire there at any moment. No claim is sent. With ``on_suspended="lose"``
  (the default, Curator's standard policy) every lease is lost at once (``on_lost``, and
  :class:`~scheduler.errors.LeaseLost` from renew and claim); its node is deleted as soon as
  the connection is back, so the next replica in line takes over, and the holder re-enters
  the latch at the end of the queue. With ``on_suspended="wait"`` renewals fail with
  :class:`~scheduler.errors.BackendUnavailable` and the elector keeps leading until its
  renew deadline, which the timing rules put before the session can expire.
* ``RECONNECTED`` (``CONNECTED`` with the same session): the node may have survived (a
  ZooKeeper server restart) or been deleted meanwhile; each surviving lease's node is read
  again (and its watch re-armed) before it may fire: a missing node loses the lease, and every
  claim transaction checks the node anyway.
* ``LOST``: the session expired (or the backend was closed): every node of it is gone, every
  lease is lost, and the next :meth:`~ZooKeeperBackend.try_acquire` re-enters the latch with
  the new session kazoo opens.

**Lease TTL.** A latch node lives as long as the session, so ``renew`` only confirms (one
read) that the session is connected and the node still exists, and moves the local deadline.
The lease's local deadline must end before the server can expire the session, so the TTL is
capped at the session timeout ZooKeeper negotiated (servers clamp it to their
``minSessionTimeout``/``maxSessionTimeout``); :func:`check_lease_timings` refuses a
configured session timeout shorter than ``lease_ttl``.

**Claims** are one ``multi`` transaction: check the leader's latch node (path and version)
and create the run node. A claim without the latch fails, whoever tries it. A claim that
finds the node already there reads it: a resend of the same attempt gets its record back.
History is trimmed like Redis's: keep the newest ``limit`` fires, never one within
``protect`` seconds of the fire being claimed, and only finished records. The candidates
are read (all at once, one round trip) just before the transaction, which deletes each
finished one at the version read: a record started or finished meanwhile fails the
transaction, which is then retried once without trimming.

**Start, finish and unclaim** act on a run node only at the version whose data they read
and checked (the attempt, and the state where it matters), so no write lands between the
check and the act. Start's write also checks the latch node in the same transaction, as
claim's does: a claimed fire of a term that is over never starts.

**ACLs.** With ``user:password`` in the URL every node Baton creates carries a digest ACL
for that user only, so clients without the credentials can neither read nor delete nor
rewrite the latch or the history (deleting a child needs DELETE on its parent). ZooKeeper
accepts any digest at connect time and refuses it only at use, so :meth:`check` probes the
chroot node and reports a wrong password as :class:`~scheduler.errors.BackendAuthError`.
The first replica to create the chroot sets its ACL.

**Bounded calls.** A call has one deadline for its session and its answers: ``op_timeout``
after it begins, or ``connection_timeout`` (default 2 s) when that is longer and a new
session must be established (the first one, or a replacement after expiry). So a read
command (``op_timeout`` 2 s) gives up on an unreachable ensemble after 2 s. Nothing is
retried inside a call beyond re-reading a latch or a run node that changed under it (at most
three reads). kazoo keeps reconnecting in the background, which is the session layer's job,
not a retried call; its own log lines (``Connection dropped`` at every attempt) are kept
below error level by :mod:`scheduler.ops.logs`, as Baton logs the states itself.

**Preflight.** Before a replica joins, :meth:`~ZooKeeperBackend.preflight` creates the
election's nodes (with our ACL) and a probe node and, with credentials, refuses any node of
the tree (chroot, election, latch, runs and each job's runs, controls, members, their
children) whose ACL lets anyone but us change it: a node created earlier without
credentials, or squatted by another client, could hold planted run records that make every
tick look claimed, or a planted latch node that leads forever.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import queue
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, unquote

from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import (
    AuthFailedError,
    BadVersionError,
    ConnectionClosedError,
    ConnectionLoss,
    KazooException,
    NoAuthError,
    NodeExistsError,
    NoNodeError,
    NotEmptyError,
    OperationTimeoutError,
    RequestTimeoutError,
    RolledBackError,
    RuntimeInconsistency,
    SessionExpiredError,
    SessionMovedError,
    ThrottledOpError,
)
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.states import EventType, WatchedEvent
from kazoo.retry import KazooRetry
from kazoo.security import Permissions, make_digest_acl, make_digest_acl_credential

from scheduler.backends.urls import BackendURL, URLForm, parse_host, reveal, split_url
from scheduler.clock import SYSTEM_CLOCK, Clock
from scheduler.errors import (
    BackendAuthError,
    BackendError,
    BackendUnavailable,
    BackendUnprotectedError,
    ClaimLost,
    ConfigError,
    LeaseLost,
    excerpt,
    printable,
)
from scheduler.firing.runs import OUTCOMES, UNFINISHED, Retention, RunRecord, fire_key
from scheduler.leadership.lease import Holder, Lease, LeaseRecord, local_deadline
from scheduler.leadership.members import Member
from scheduler.leadership.timings import LeaseTimings
from scheduler.ops.logs import get_logger

#: The chroot when the URL names none.
DEFAULT_CHROOT = "/baton"
DEFAULT_PORT = 2181
#: Seconds; the session timeout when neither the config nor the caller gives one (the
#: default ``lease_ttl``).
DEFAULT_SESSION_TIMEOUT = 10.0
#: Seconds; the default wait for a new session (never more than the session timeout): the
#: read commands' whole budget, so they give up on a dead ensemble in 2 s.
DEFAULT_CONNECTION_TIMEOUT = 2.0

OnSuspended = Literal["lose", "wait"]
ON_SUSPENDED: tuple[OnSuspended, ...] = ("lose", "wait")

# Reasons a lease is lost, as LeaseLost.reason and on_lost(reason).
SUSPENDED = "connection-suspended"
EXPIRED = "session-expired"
DELETED = "node-deleted"
MODIFIED = "node-modified"
RELEASED = "released"
NOT_HOLDER = "not-holder"

# Latch node names: "<guid>-latch-" followed by ZooKeeper's 10-digit sequence number.
_LATCH_MARK = "-latch-"
# Reconnect quickly after a server restart (kazoo's default backoff grows to an hour); the
# connection loop is kazoo's session layer, not a retried call.
_RECONNECT = {"max_tries": -1, "delay": 0.05, "backoff": 2, "max_delay": 1.0, "max_jitter": 0.2}
# How many lost-lease reasons to remember, so a late renew/claim can say why.
_GONE_MEMORY = 1024
# The most run nodes one claim reads and deletes while trimming: one transaction's size.
_TRIM_BATCH = 1000
# Trimming deletes only these; a claimed or running record would make its fire look free.
_FINISHED = tuple(outcome for outcome in OUTCOMES if outcome not in UNFINISHED)
# Errors that mean "no answer now" rather than "never".
_UNAVAILABLE = (
    ConnectionLoss,
    OperationTimeoutError,
    RequestTimeoutError,
    SessionMovedError,
    ThrottledOpError,
)
# The election's directories, and how many levels below each the preflight's ACL check
# descends: runs/<job>/<fire key>, latch/<node>, controls/<key>, members/<replica>.
_TREE = {"latch": 1, "runs": 2, "controls": 1, "members": 1}
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


def _acl_problem(acls: list[Any], ours: str) -> str | None:
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
    shown = ",".join(_acl_text(acl, ours) for acl in acls) or "(none)"
    if intruders:
        first = intruders[0]
        who = "anyone" if first.id.scheme == "world" else _acl_text(first, ours)
        return f"has ACL {shown} ({who} may change it, not only user {user!r})"
    if granted & _NEEDED != _NEEDED:
        return f"has ACL {shown} (user {user!r} may not read, write, create and delete)"
    return None


def _acl_text(acl: Any, ours: str) -> str:
    """One ACL entry as zkCli shows it (``world:anyone:cdrwa``), without password digests:
    a digest entry shows its user only (and whether it is ours)."""
    perms = "".join(letter for bit, letter in _PERMS if acl.perms & bit) or "-"
    scheme, ident = str(acl.id.scheme), str(acl.id.id)
    if scheme == "digest":
        user = ident.split(":", 1)[0]
        ident = user if ident == ours else f"{user}(another password)"
    return f"{scheme}:{printable(ident[:60])}:{perms}"


@dataclass(frozen=True, slots=True)
class ZooKeeperOptions:
    """Session and TLS options of the ZooKeeper backend (the ``zookeeper:`` config section).

    Attributes:
        session_timeout: seconds ZooKeeper keeps a silent session, and with it this replica's
            latch node (default 10 s; the config default is ``lease_ttl``, the shortest
            allowed). It bounds failover after ``kill -9``: shorter fails over faster, but a
            GC pause or network hiccup longer than it costs the session.
        connection_timeout: seconds a call may take, answers included, when a new session
            must be established first (the first one, or a replacement after expiry), if
            longer than the call's ``op_timeout``; default ``min(2, session_timeout)``. The
            read commands wait that long for an unreachable ensemble. At most
            ``session_timeout``: waiting longer for a connection cannot save a session that
            has expired meanwhile.
        on_suspended: ``lose`` (default, Curator's policy): leadership ends the moment the
            connection drops, which may cost a handover after a blip; ``wait``: keep leading
            through a short disconnection until the elector's renew deadline.
        tls: connect with TLS (implied by any of the file options). The server certificate
            is always verified, host name included.
        ca_file: PEM file of the CA(s) to verify the servers with (default: system CAs).
        cert_file: PEM client certificate, for servers that require client authentication.
        key_file: PEM private key of ``cert_file``.
    """

    session_timeout: float = DEFAULT_SESSION_TIMEOUT
    connection_timeout: float | None = None
    on_suspended: OnSuspended = "lose"
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    def __post_init__(self) -> None:
        if not self.session_timeout > 0:
            raise ConfigError(
                "zookeeper.session_timeout",
                f"must be a positive number of seconds, got {self.session_timeout}",
            )
        if self.connection_timeout is not None:
            if not self.connection_timeout > 0:
                raise ConfigError(
                    "zookeeper.connection_timeout",
                    f"must be a positive number of seconds, got {self.connection_timeout}",
                )
            if self.connection_timeout > self.session_timeout:
                raise ConfigError(
                    "zookeeper.connection_timeout",
                    f"must not exceed zookeeper.session_timeout ({self.connection_timeout} s > "
                    f"{self.session_timeout} s): a connection that takes longer cannot save "
                    "the session, which has expired on the server by then",
                )
        if self.on_suspended not in ON_SUSPENDED:
            raise ConfigError(
                "zookeeper.on_suspended",
                f"must be one of {', '.join(ON_SUSPENDED)}, got {self.on_suspended!r}",
            )
        if (self.cert_file is None) != (self.key_file is None):
            raise ConfigError(
                "zookeeper.cert_file" if self.cert_file is None else "zookeeper.key_file",
                "zookeeper.cert_file and zookeeper.key_file must be given together",
            )
        for key in ("ca_file", "cert_file", "key_file"):
            value = getattr(self, key)
            if value is not None and not Path(value).is_file():
                raise ConfigError(f"zookeeper.{key}", f"no such file: {value}")

    @property
    def use_tls(self) -> bool:
        """Whether connections use TLS."""
        return self.tls or any(f is not None for f in (self.ca_file, self.cert_file, self.key_file))

    @property
    def connect_wait(self) -> float:
        """Seconds a call may take when it must wait for a new session, unless its
        ``op_timeout`` is longer (``connection_timeout`` or its default)."""
        if self.connection_timeout is not None:
            return self.connection_timeout
        return min(DEFAULT_CONNECTION_TIMEOUT, self.session_timeout)


def check_lease_timings(options: ZooKeeperOptions, timings: LeaseTimings) -> None:
    """Refuse a session timeout under which a replica could lead after its session expired.

    A lease's local deadline is at most ``lease_ttl`` after a request the server answered,
    and the server expires a session no sooner than ``session_timeout`` after the last
    request it received; the deadline therefore ends first only if
    ``session_timeout >= lease_ttl``.

    Raises:
        ConfigError: naming ``zookeeper.session_timeout`` and ``lease_ttl``.
    """
    if options.session_timeout < timings.lease_ttl:
        raise ConfigError(
            "zookeeper.session_timeout",
            f"must be at least lease_ttl ({options.session_timeout} s < {timings.lease_ttl} s): "
            "the session, and with it the leader's latch node, could expire on the server "
            "while this replica still believes it leads",
        )


@dataclass(frozen=True, slots=True)
class ZooKeeperTarget:
    """A parsed ``zookeeper://`` URL.

    Attributes:
        hosts: ``host:port,host:port`` for kazoo.
        root: the absolute chroot path Baton's nodes live under.
        user: digest user name, or ``None`` without credentials.
        password: digest password (never shown, not even by ``repr``).
        shown: the URL with the password replaced by ``***``.
    """

    hosts: str
    root: str
    user: str | None
    password: str | None = field(repr=False)
    shown: str


_FORM = URLForm(
    "zookeeper",
    "zookeeper://[user:password@]host[:port][,host[:port]...][/chroot]",
    (),
    "; session and TLS options go in the zookeeper: config section",
)


def parse_url(url: str | BackendURL) -> ZooKeeperTarget:
    """Parse ``zookeeper://[user:password@]host1[:2181][,host2[:2181]...][/chroot]``.

    The credentials are a digest ``user:password`` (both non-empty; the password as typed
    or percent-encoded); hosts are names, IPv4 or bracketed IPv6 addresses with an optional
    port (default 2181); the chroot defaults to ``/baton``. The URL takes no ``?options``:
    session and TLS options are the ``zookeeper:`` config section.

    Raises:
        ConfigError: naming the problem and the redacted URL (key ``backend``).
    """
    text = reveal(url)
    parts = split_url(text, _FORM)
    user, password = parts.user, parts.password
    if user is not None and (not user or not password):
        raise _FORM.error(text, "credentials must be user:password (both non-empty)")
    hosts = []
    for item in parts.hosts.split(","):
        host, port = parse_host(item, DEFAULT_PORT, _FORM, text)
        hosts.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    try:
        path = unquote(parts.path, errors="strict").rstrip("/")
    except UnicodeDecodeError:
        raise _FORM.error(text, "the chroot is not percent-encoded UTF-8") from None
    root = path or DEFAULT_CHROOT
    for segment in root.split("/")[1:]:
        _check_segment(segment, "backend", f"chroot {excerpt(root, 80)} in {parts.shown!r}")
    return ZooKeeperTarget(",".join(hosts), root, user, password, parts.shown)


def _check_segment(segment: str, key: str, what: str) -> None:
    """Refuse a path segment ZooKeeper would reject or read as another path."""
    if not segment or segment in (".", "..") or "/" in segment:
        raise ConfigError(key, f"{what}: {segment!r} is not a valid ZooKeeper node name")
    if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in segment):
        raise ConfigError(key, f"{what}: {segment!r} contains a control character")


def _job_segment(job: str) -> str:
    """A job name as one node name: percent-encoded, so ``/`` cannot nest and ``.`` is safe."""
    encoded = quote(job, safe="")
    return encoded.replace(".", "%2E") if encoded in (".", "..") else encoded


def _seq(name: str) -> int:
    """The sequence number ZooKeeper appended to a latch node name."""
    try:
        return int(name.rsplit(_LATCH_MARK, 1)[1])
    except (IndexError, ValueError):
        return -1  # not a latch node: sorts first, and is never mistaken for ours


def _refusal(raw: bytes | None, run: RunRecord, state: str | None = None) -> str | None:
    """Why the stored run node ``raw`` is not ``run.attempt``'s (in ``state``, if given):
    ``gone``, ``other-attempt`` or ``not-claimed``; ``None`` when it is."""
    if raw is None:
        return "gone"
    try:
        stored = json.loads(raw)
    except ValueError:
        stored = None
    if not isinstance(stored, dict) or not run.attempt or stored.get("attempt") != run.attempt:
        return "other-attempt"
    if state is not None and stored.get("outcome") != state:
        return "not-claimed"
    return None


def _finished(raw: bytes) -> bool:
    """Whether the run node ``raw`` holds a finished record (one trimming may delete)."""
    try:
        stored = json.loads(raw)
    except ValueError:
        return False
    return isinstance(stored, dict) and stored.get("outcome") in _FINISHED


def _holder_digest(holder_id: str) -> str:
    # The holder id is the secret that lets a holder renew and release; the node stores its
    # digest so that anyone allowed to read the latch cannot learn it.
    return hashlib.sha256(holder_id.encode()).hexdigest()


@dataclass(eq=False, slots=True)
class _Node:
    """A latch node this backend created; guarded by the backend's lock."""

    election: str
    path: str
    holder_id: str
    token: int
    version: int
    session: int
    issued: bool = False
    lost: str = ""
    released: bool = False
    on_lost: Callable[[str], None] | None = None
    notified: bool = False
    #: False for a node another instance created, verified on the server for one call.
    local: bool = True


class ZooKeeperBackend:
    """Leader latch and run records in a ZooKeeper ensemble, through one kazoo session.

    Open it with :meth:`from_url`; no connection is made until the first call. Safe to share
    between threads. Leases are tied to this instance's session: :meth:`close` ends the
    session, which deletes its latch nodes at once.

    Args:
        target: the parsed URL.
        op_timeout: seconds each call may wait for the session and for its answers.
        clock: the clock lease deadlines and ``since`` stamps are read from.
        options: session and TLS options.
    """

    def __init__(
        self,
        target: ZooKeeperTarget,
        *,
        op_timeout: float,
        clock: Clock = SYSTEM_CLOCK,
        options: ZooKeeperOptions | None = None,
    ) -> None:
        if not op_timeout > 0:
            raise ConfigError("backend", f"op_timeout must be positive, got {op_timeout!r}")
        self.url = target.shown
        self.options = options or ZooKeeperOptions()
        self._target = target
        self._op_timeout = op_timeout
        self._clock = clock
        self._root = target.root
        self._log = get_logger(backend=self.url)
        self._acl: list[Any] | None = None
        auth_data: list[tuple[str, str]] = []
        if target.user is not None and target.password is not None:
            self._acl = [make_digest_acl(target.user, target.password, all=True)]
            auth_data = [("digest", f"{target.user}:{target.password}")]
        opts = self.options
        self._client = KazooClient(
            hosts=target.hosts,
            timeout=opts.session_timeout,
            auth_data=auth_data,
            default_acl=self._acl,
            connection_retry=KazooRetry(**_RECONNECT),
            command_retry={"max_tries": 0},
            use_ssl=opts.use_tls,
            ca=opts.ca_file,
            certfile=opts.cert_file,
            keyfile=opts.key_file,
            verify_certs=True,
            check_hostname=opts.use_tls,
        )
        self._client.add_listener(self._on_state)

        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._started = False
        self._closed = False
        self._connected = False
        self._ever_connected = False
        self._session_id: int | None = None
        self._negotiated: float | None = None
        self._connect_error = ""
        self._clamp_logged = False
        self._nodes: dict[str, _Node] = {}
        self._mine: dict[tuple[str, str], _Node] = {}
        self._pending: dict[tuple[str, str], str] = {}
        # GUIDs of creates given up on without finding their node: the create may still land
        # later, and such a node must be deleted, or once lowest it blocks the election.
        self._strays: set[str] = set()
        self._doomed: set[str] = set()
        self._gone: OrderedDict[str, str] = OrderedDict()
        self._known: set[str] = set()
        self._waiters: dict[str, list[threading.Event]] = {}
        self._state_waiters: list[threading.Event] = []
        # Notices (on_lost callbacks, follow-up requests after a state change) run here, never
        # on kazoo's connection or callback threads, which must not block.
        self._notices: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._notifier = threading.Thread(
            target=self._notify_loop, name="baton-zk-notices", daemon=True
        )
        self._notifier.start()
        self._capture_negotiated_timeout()

    @classmethod
    def from_url(
        cls,
        url: str | BackendURL,
        *,
        op_timeout: float,
        clock: Clock = SYSTEM_CLOCK,
        options: ZooKeeperOptions | None = None,
    ) -> ZooKeeperBackend:
        """Open ``zookeeper://[user:password@]host:port[,host:port...]/chroot``.

        Args:
            url: the ensemble, optional digest credentials and the chroot (default
                ``/baton``).
            op_timeout: seconds each call may wait for the session and its answers.
            clock: the clock deadlines are computed from.
            options: session and TLS options (defaults: :class:`ZooKeeperOptions`).

        Raises:
            ConfigError: the URL or an option is malformed.
        """
        return cls(parse_url(url), op_timeout=op_timeout, clock=clock, options=options)

    def __repr__(self) -> str:
        return f"ZooKeeperBackend({self.url!r})"

    @property
    def session_id(self) -> int | None:
        """The current session id while connected, else ``None`` (for logs and tooling)."""
        with self._lock:
            return self._session_id if self._connected else None

    @property
    def negotiated_session_timeout(self) -> float | None:
        """Seconds of session timeout the server granted at the last connect, if known."""
        return self._negotiated

    # --- the LeaseBackend protocol -------------------------------------------------------

    def try_acquire(self, name: str, holder: Holder, ttl: float) -> Lease | None:
        """Join the latch of ``name`` (once per holder) and lead if this node is the lowest.

        A holder whose previous lease from this backend is still in the latch (it was lost,
        or the caller simply asks again) gives that node up first and queues anew, as
        Curator's latch does on reset: a new acquisition always gets a new token.

        Returns:
            The lease, with the czxid of the node as token, when this holder's node is the
            lowest; ``None`` while it waits behind others (it stays queued).
        """
        if not ttl > 0:
            raise ValueError(f"lease ttl must be positive seconds, got {ttl!r}")
        sent_at = self._clock.monotonic()
        latch = self._latch(name)
        key = (name, holder.id)
        with self._errors(f"acquire {name!r}"):
            deadline = self._begin()
            with self._lock:
                node = self._mine.get(key)
                pending = self._pending.get(key)
            if node is not None and (node.issued or node.lost):
                self._retire(node, deadline)
                node = None
            if node is None and pending is not None:
                node = self._adopt(name, holder, pending, deadline)
            if node is None:
                node = self._join(name, holder, deadline)
            children = self._children(latch, deadline)
            mine = node.path.rsplit("/", 1)[1]
            children = self._sweep_strays(latch, children, mine, deadline)
            if mine not in children:
                # Deleted by someone else (or by an expiry we have not heard of yet): forget
                # it; the next attempt queues again.
                self._forget(node, DELETED)
                return None
            if min(children, key=_seq) != mine:
                return None
            stamped = self._stamp(node, holder, deadline)
            if stamped is None:
                return None
        effective = self._capped_ttl(ttl)
        return Lease(
            name=name,
            holder=holder,
            token=node.token,
            ttl=effective,
            sent_at=sent_at,
            deadline=local_deadline(sent_at, effective),
            handle=node.path,
        )

    def renew(self, lease: Lease) -> Lease:
        """Confirm the session is connected and the lease's node exists; move the deadline.

        Raises:
            LeaseLost: the node is gone or rewritten, the session expired, the lease was
                released, or (``on_suspended="lose"``) the connection was suspended.
        """
        sent_at = self._clock.monotonic()
        node = self._owned(lease)
        with self._errors(f"renew {lease.name!r}"):
            if node is None:
                # Not created here: reading it on the server is the whole verification.
                self._remote(lease, self._begin())
                return lease.renewed(sent_at)
            deadline = self._begin_for(node)
            try:
                stat = self._wait(self._client.exists_async(node.path), deadline, "exists")
            except SessionExpiredError:
                raise self._lost(node, EXPIRED) from None
        if stat is None or stat.czxid != node.token:
            raise self._lost(node, DELETED)
        if stat.version != node.version:
            raise self._lost(node, MODIFIED)
        with self._lock:
            if node.lost:
                raise LeaseLost(lease.name, node.lost)
        return lease.renewed(sent_at)

    def release(self, lease: Lease) -> None:
        """Delete the lease's latch node if this holder still has it; else do nothing.

        Followers watching it are woken by ZooKeeper at once. If the delete cannot be sent
        now, it is sent as soon as the connection is back.
        """
        with self._lock:
            node = self._nodes.get(lease.handle)
            if node is None and lease.handle in self._gone:
                return
            if node is not None:
                if node.holder_id != lease.holder.id or node.token != lease.token:
                    return
                node.released = True
                self._drop_locked(node, RELEASED)
                if node.lost == EXPIRED:
                    return  # gone with its session
                self._doomed.add(node.path)
        with self._errors(f"release {lease.name!r}"):
            deadline = self._begin()
            version = -1  # our own node: its path is unique to us, whatever its version
            if node is None:
                try:
                    node = self._remote(lease, deadline)
                except LeaseLost:
                    return  # not this holder's (any more): nothing to release
                version = node.version
            self._delete(node.path, version, deadline)

    def watch(self, lease: Lease, on_lost: Callable[[str], None]) -> None:
        """Call ``on_lost(reason)`` once, from a backend thread, when ``lease`` is lost.

        Triggers: the node is deleted or rewritten (a watch on it), the connection is
        suspended (with ``on_suspended="lose"``), the session expires, or the node is missing
        when re-read after a reconnect. Not called after :meth:`release`. Only leases
        acquired through this instance are watched (they belong to its session).
        """
        with self._lock:
            node = self._nodes.get(lease.handle)
            if node is None or node.holder_id != lease.holder.id or node.token != lease.token:
                # Lost already (and not released): say so now. A lease another instance
                # acquired is not watched here; renewals find its loss.
                reason = self._gone.get(lease.handle) if node is None else NOT_HOLDER
                if reason is not None and reason != RELEASED and not self._closed:
                    self._notices.put(lambda: on_lost(reason))
                return
            node.on_lost = on_lost
            if node.lost:
                self._notify_locked(node)
                return
        self._arm(node)

    def read(self, name: str) -> LeaseRecord | None:
        """The owner of the lowest latch node of ``name``, without joining the latch.

        ``ttl_left`` is ``None``: the node lives as long as its owner's session.
        """
        latch = self._latch(name)
        with self._errors(f"read {name!r}"):
            deadline = self._begin()
            for _ in range(3):  # the lowest node may go between listing and reading it
                children = self._children(latch, deadline)
                if not children:
                    return None
                lowest = min(children, key=_seq)
                note = self._client.get_async(f"{self._election(name)}/leader")
                try:
                    raw, stat = self._wait(
                        self._client.get_async(f"{latch}/{lowest}"), deadline, "get"
                    )
                except NoNodeError:
                    continue
                try:
                    noted, _ = self._wait(note, deadline, "get")
                except NoNodeError:
                    noted = b""
                return self._record(name, raw, stat, noted)
        raise BackendUnavailable(self.url, f"the latch of {name!r} kept changing under a read")

    def wait_for_change(self, name: str, timeout: float) -> None:
        """Block up to ``timeout`` s; return as soon as the watched latch node is deleted.

        A participant watches the predecessor of its own queued node, an observer the
        leader's node. Returns at once when there is nothing to wait behind (the latch is
        empty, or our node is already the lowest), and early on any connection state
        change. Backend errors are not raised: the wait runs out its time instead, and the
        caller's next call reports them. Real time is used: this is a wait on the network.
        """
        end = time.monotonic() + max(0.0, timeout)
        woken = threading.Event()
        target = ""
        try:
            with self._errors(f"wait on {name!r}"):
                deadline = self._begin(limit=end)
                latch = self._latch(name)
                children = self._children(latch, deadline)
                ordered = sorted(children, key=_seq)
                with self._lock:
                    queued = [
                        n.path.rsplit("/", 1)[1]
                        for n in self._nodes.values()
                        if n.election == name and not n.issued and not n.lost
                    ]
                ours = [c for c in ordered if c in set(queued)]
                if ours:
                    index = ordered.index(ours[0])
                    if index == 0:
                        return
                    target = f"{latch}/{ordered[index - 1]}"
                elif ordered:
                    target = f"{latch}/{ordered[0]}"
                else:
                    return
                with self._lock:
                    self._waiters.setdefault(target, []).append(woken)
                    self._state_waiters.append(woken)
                try:
                    self._wait(
                        self._client.get_async(target, watch=self._on_node_event),
                        deadline,
                        "get",
                    )
                except NoNodeError:
                    return
            woken.wait(max(0.0, end - time.monotonic()))
        except BackendError:
            with self._cond:
                self._cond.wait_for(lambda: self._closed, max(0.0, end - time.monotonic()))
        finally:
            with self._lock:
                if target and woken in self._waiters.get(target, []):
                    self._waiters[target].remove(woken)
                    if not self._waiters[target]:
                        del self._waiters[target]
                if woken in self._state_waiters:
                    self._state_waiters.remove(woken)

    def claim(self, lease: Lease, run: RunRecord, retention: Retention) -> RunRecord | None:
        """Create the run node in one transaction with a check of the lease's latch node.

        The same transaction deletes the finished run nodes that fall out of ``retention``
        (listed, and read when there are any, just before it; deleted at the versions
        read), so a claim costs one or two round trips of reads and one write. A run node
        already there is read: a resend of ``run.attempt`` gets the record it stored.

        Raises:
            LeaseLost: the lease is not this holder's, or its node is gone or rewritten.
        """
        job_dir = self._run_dir(lease.name, run.job)
        run_path = f"{job_dir}/{self._key_name(run.key)}"
        with self._errors(f"claim {run.job!r}"):
            node, deadline = self._lease_node(lease)
            for pass_ in range(2):
                if job_dir not in self._known:
                    self._ensure(job_dir, deadline)
                # A trimmed node deleted or written by someone else meanwhile fails the whole
                # transaction: the second pass claims without trimming.
                victims = self._victims(job_dir, run, retention, deadline) if not pass_ else []
                transaction = self._client.transaction()
                transaction.check(node.path, node.version)
                transaction.create(run_path, run.to_json().encode(), acl=self._acl)
                for key, version in victims:
                    transaction.delete(f"{job_dir}/{self._key_name(key)}", version)
                try:
                    results = self._wait(transaction.commit_async(), deadline, "multi")
                except SessionExpiredError:
                    raise self._lost(node, EXPIRED) from None
                check, create, deletes = results[0], results[1], results[2:]
                # The lease is checked before the duplicate: a failed check is reported even
                # when the create would also have failed.
                if isinstance(check, NoNodeError):
                    raise self._lost(node, DELETED)
                if isinstance(check, BadVersionError):
                    raise self._lost(node, MODIFIED)
                if isinstance(create, NodeExistsError):
                    return self._resent(run_path, run, deadline)
                if isinstance(create, NoNodeError):
                    # The job's directory was deleted behind our cache: create it again.
                    self._known.discard(job_dir)
                    continue
                # BadVersion: a candidate was written after we read it, so what we checked is
                # no longer what we would delete; the retry keeps it.
                if any(
                    isinstance(r, NoNodeError | NotEmptyError | BadVersionError) for r in deletes
                ):
                    continue
                failed = [
                    r
                    for r in (create, check, *deletes)
                    if isinstance(r, Exception)
                    and not isinstance(r, RolledBackError | RuntimeInconsistency)
                ]
                if failed:
                    raise failed[0]
                return run
            raise BackendUnavailable(self.url, f"claim {run.job!r}: the history kept changing")

    def start(self, lease: Lease, run: RunRecord) -> RunRecord:
        """Overwrite ``run.attempt``'s ``claimed`` run node with ``run``, lease checked.

        Reads the run node, checks its attempt and state, then writes it at the version read
        in one transaction with a check of the lease's latch node (as :meth:`claim` does). A
        node written meanwhile is read again (at most three reads).

        Raises:
            LeaseLost: the lease is not this holder's, or its node is gone or rewritten
                (checked first, also when the run node would refuse the start).
            ClaimLost: reason ``gone``, ``other-attempt`` or ``not-claimed``.
        """
        run_path = f"{self._run_dir(lease.name, run.job)}/{self._key_name(run.key)}"
        with self._errors(f"start {run.job!r}"):
            node, deadline = self._lease_node(lease)
            for _ in range(3):
                try:
                    raw, stat = self._wait(self._client.get_async(run_path), deadline, "get")
                except NoNodeError:
                    raw, stat = None, None
                refusal = _refusal(raw, run, "claimed")
                transaction = self._client.transaction()
                transaction.check(node.path, node.version)
                if refusal is None:
                    transaction.set_data(run_path, run.to_json().encode(), stat.version)
                # Without a write the transaction only checks the latch: LeaseLost is the
                # answer whenever the lease is gone, whatever the run node says.
                try:
                    results = self._wait(transaction.commit_async(), deadline, "multi")
                except SessionExpiredError:
                    raise self._lost(node, EXPIRED) from None
                check = results[0]
                if isinstance(check, NoNodeError):
                    raise self._lost(node, DELETED)
                if isinstance(check, BadVersionError):
                    raise self._lost(node, MODIFIED)
                if refusal is not None:
                    raise ClaimLost(run.job, run.scheduled_time.isoformat(), refusal)
                written = results[1]
                if isinstance(written, NoNodeError):
                    raise ClaimLost(run.job, run.scheduled_time.isoformat(), "gone")
                if isinstance(written, BadVersionError):
                    continue  # written meanwhile (finished as lost, say): read it again
                failed = [
                    r
                    for r in results
                    if isinstance(r, Exception)
                    and not isinstance(r, RolledBackError | RuntimeInconsistency)
                ]
                if failed:
                    raise failed[0]
                return run
            raise BackendUnavailable(self.url, f"start {run.job!r}: the record kept changing")

    def finish(self, name: str, run: RunRecord) -> None:
        """Overwrite the run node of ``run`` if ``run.attempt`` wrote it."""
        path = f"{self._run_dir(name, run.job)}/{self._key_name(run.key)}"
        with self._errors(f"finish {run.job!r}"):
            deadline = self._begin()
            try:
                raw, stat = self._wait(self._client.get_async(path), deadline, "get")
            except NoNodeError:
                return
            if _refusal(raw, run) is not None:
                return
            with contextlib.suppress(NoNodeError, BadVersionError):
                self._wait(
                    self._client.set_async(path, run.to_json().encode(), stat.version),
                    deadline,
                    "set",
                )

    def lookup(self, name: str, job: str, scheduled_time: datetime) -> RunRecord | None:
        """The run node of (``job``, ``scheduled_time``), or ``None``."""
        path = f"{self._run_dir(name, job)}/{self._key_name(fire_key(scheduled_time))}"
        with self._errors(f"lookup {job!r}"):
            deadline = self._begin()
            try:
                raw, _ = self._wait(self._client.get_async(path), deadline, "get")
            except NoNodeError:
                return None
        return RunRecord.from_json(raw)

    def unclaim(self, name: str, run: RunRecord) -> bool:
        """Delete the run node of ``run``'s fire at the version read, if that version is
        ``run.attempt``'s and ``claimed``."""
        path = f"{self._run_dir(name, run.job)}/{self._key_name(run.key)}"
        with self._errors(f"unclaim {run.job!r}"):
            deadline = self._begin()
            for _ in range(3):
                try:
                    raw, stat = self._wait(self._client.get_async(path), deadline, "get")
                except NoNodeError:
                    return False
                if _refusal(raw, run, "claimed") is not None:
                    return False
                try:
                    self._wait(self._client.delete_async(path, stat.version), deadline, "delete")
                except NoNodeError:
                    return False
                except BadVersionError:
                    continue  # started or finished meanwhile: read it again
                return True
            raise BackendUnavailable(self.url, f"unclaim {run.job!r}: the record kept changing")

    def history(self, name: str, job: str, limit: int) -> list[RunRecord]:
        """The newest ``limit`` run nodes of ``job``, newest fire first."""
        if limit <= 0:
            return []
        job_dir = self._run_dir(name, job)
        with self._errors(f"history {job!r}"):
            deadline = self._begin()
            keys = sorted(self._run_keys(job_dir, deadline), reverse=True)[:limit]
            # All reads in flight at once: one round trip, not one per record.
            pending = [self._client.get_async(f"{job_dir}/{self._key_name(k)}") for k in keys]
            records = []
            for result in pending:
                try:
                    raw, _ = self._wait(result, deadline, "get")
                except NoNodeError:
                    continue  # trimmed meanwhile
                records.append(RunRecord.from_json(raw))
        return records

    def claimed(self, name: str, job: str, since: datetime, until: datetime) -> set[int]:
        """Fire keys of ``job`` with a run node in ``[since, until]``."""
        job_dir = self._run_dir(name, job)
        low, high = fire_key(since), fire_key(until)
        with self._errors(f"claimed {job!r}"):
            deadline = self._begin()
            return {k for k in self._run_keys(job_dir, deadline) if low <= k <= high}

    def announce(self, name: str, member: Member, ttl: float) -> None:
        """Keep ``member``'s presence as an ephemeral node: it lives as long as our session,
        so ``ttl`` is not needed (a dead replica's node goes with its session)."""
        members_dir = f"{self._election(name)}/members"
        _check_segment(member.replica_id, "replica_id", "replica id")
        path = f"{members_dir}/{member.replica_id}"
        data = member.to_json().encode()
        with self._errors("announce"):
            deadline = self._begin()
            self._ensure(members_dir, deadline)
            try:
                self._wait(
                    self._client.create_async(path, data, acl=self._acl, ephemeral=True),
                    deadline,
                    "create",
                )
                return
            except NodeExistsError:
                pass
            _, stat = self._wait(self._client.get_async(path), deadline, "get")
            if stat.ephemeralOwner == self._session_id:
                self._wait(self._client.set_async(path, data, stat.version), deadline, "set")
                return
            # Left by an earlier session of the same replica id: it would vanish with that
            # session while we live on, so take it over.
            with contextlib.suppress(NoNodeError, BadVersionError):
                self._wait(self._client.delete_async(path, stat.version), deadline, "delete")
            with contextlib.suppress(NodeExistsError):
                self._wait(
                    self._client.create_async(path, data, acl=self._acl, ephemeral=True),
                    deadline,
                    "create",
                )

    def withdraw(self, name: str, replica_id: str) -> None:
        """Delete ``replica_id``'s presence node."""
        path = f"{self._election(name)}/members/{replica_id}"
        with self._errors("withdraw"):
            deadline = self._begin()
            with contextlib.suppress(NoNodeError):
                self._wait(self._client.delete_async(path), deadline, "delete")

    def members(self, name: str) -> list[Member]:
        """Presence nodes of live sessions, by replica id."""
        members_dir = f"{self._election(name)}/members"
        with self._errors("members"):
            deadline = self._begin()
            names = sorted(self._children(members_dir, deadline))
            pending = [self._client.get_async(f"{members_dir}/{n}") for n in names]
            out = []
            for result in pending:
                try:
                    raw, _ = self._wait(result, deadline, "get")
                except NoNodeError:
                    continue  # its session ended meanwhile
                out.append(Member.from_json(raw))
        return out

    def set_control(self, name: str, key: str, value: str | None) -> None:
        """Set or delete the persistent control node of ``key``."""
        controls_dir = f"{self._election(name)}/controls"
        path = f"{controls_dir}/{quote(key, safe='')}"
        with self._errors("set control"):
            deadline = self._begin()
            if value is None:
                with contextlib.suppress(NoNodeError):
                    self._wait(self._client.delete_async(path), deadline, "delete")
                return
            self._ensure(controls_dir, deadline)
            try:
                self._wait(
                    self._client.create_async(path, value.encode(), acl=self._acl),
                    deadline,
                    "create",
                )
            except NodeExistsError:
                self._wait(self._client.set_async(path, value.encode()), deadline, "set")

    def controls(self, name: str) -> dict[str, str]:
        """Every control node of cluster ``name``."""
        controls_dir = f"{self._election(name)}/controls"
        with self._errors("controls"):
            deadline = self._begin()
            keys = self._children(controls_dir, deadline)
            pending = [(k, self._client.get_async(f"{controls_dir}/{k}")) for k in keys]
            out = {}
            for key, result in pending:
                try:
                    raw, _ = self._wait(result, deadline, "get")
                except NoNodeError:
                    continue
                out[unquote(key)] = raw.decode()
        return out

    def check(self) -> None:
        """Connect and probe the chroot node with our credentials.

        ZooKeeper accepts any digest at connect time; a wrong password shows only when a
        node protected by the right one is read. The chroot is not created here: an
        observer must not set its ACL.

        Raises:
            BackendUnavailable: no session within the connection timeout.
            BackendAuthError: the credentials are refused, or missing for a protected chroot.
        """
        root = self._root
        with self._errors("check"):
            deadline = self._begin()
            user, password = self._target.user, self._target.password
            try:
                if user is None or password is None:
                    self._wait(self._client.get_async(root), deadline, "get")
                    return
                acls, _ = self._wait(self._client.get_acls_async(root), deadline, "getACL")
            except NoNodeError:
                return  # nothing to probe yet; the first replica to create it sets its ACL
            except NoAuthError:
                if user is None:
                    raise BackendAuthError(
                        self.url,
                        f"{root} is protected by a digest ACL: put user:password in the URL",
                    ) from None
                raise BackendAuthError(
                    self.url,
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
                    self.url,
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
        election = self._election(name)
        dirs = {f"{election}/{d}": depth for d, depth in _TREE.items()}
        user, password = self._target.user, self._target.password
        ours = make_digest_acl_credential(user, password) if user and password else None
        tree = {self._root: 0, election: 0, **dirs, f"{election}/leader": 0}
        with self._errors("preflight"):
            missing = set(tree) if ours is None else self._check_acls(tree, ours)
            deadline = self._begin()
            for path in dirs:
                self._ensure(path, deadline)
            if ours is not None and missing:
                # Created by us just now, unless another client was faster.
                self._check_acls({p: d for p, d in tree.items() if p in missing}, ours)
            deadline = self._begin()
            probe = f"{election}/preflight-{uuid.uuid4().hex}"
            self._wait(
                self._client.create_async(probe, b"", acl=self._acl, ephemeral=True),
                deadline,
                "create",
            )
            self._wait(self._client.set_async(probe, b"probe"), deadline, "set")
            self._wait(self._client.delete_async(probe), deadline, "delete")

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
        user = ours.split(":", 1)[0]
        missing: set[str] = set()
        problems: list[tuple[str, str]] = []
        level = list(tree.items())
        while level:
            deadline = self._begin()
            asked = [
                (
                    path,
                    depth,
                    self._client.get_acls_async(path),
                    self._client.get_children_async(path) if depth else None,
                )
                for path, depth in level
            ]
            level = []
            for path, depth, acl_result, children_result in asked:
                try:
                    acls, _ = self._wait(acl_result, deadline, "getACL")
                except NoNodeError:
                    missing.add(path)
                    continue
                except NoAuthError:
                    problems.append((path, f"has an ACL that does not let user {user!r} read it"))
                    continue
                problem = _acl_problem(acls, ours)
                if problem is not None:
                    problems.append((path, problem))
                if children_result is None:
                    continue
                try:
                    children = self._wait(children_result, deadline, "getChildren")
                except (NoNodeError, NoAuthError):
                    continue  # gone meanwhile, or unreadable (reported through its ACL)
                if depth == 1 and path.rsplit("/", 2)[-2] == "runs":  # a job's run nodes
                    children = sorted(children, reverse=True)[:_ACL_SCAN]
                level += [(f"{path}/{child}", depth - 1) for child in children]
        if problems:
            path, problem = problems[0]
            more = f"; {len(problems) - 1} more nodes too" if len(problems) > 1 else ""
            raise BackendUnprotectedError(
                self.url,
                path,
                f"node {printable(path[:160])} {problem}{more}: delete it (zkCli: deleteall) "
                f"or, if it holds Baton's own data, protect it (zkCli: addauth digest "
                f"{user}:<password>, then setAcl -R <node> auth::cdrwa)",
            )
        return missing

    def close(self) -> None:
        """End the session (its latch nodes go at once) and stop kazoo's threads."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
            waiters = list(self._state_waiters)
        for event in waiters:
            event.set()
        with contextlib.suppress(KazooException, OSError):
            self._client.stop()
        with contextlib.suppress(KazooException, OSError):
            self._client.close()
        self._notices.put(None)

    # --- the latch -----------------------------------------------------------------------

    def _join(self, name: str, holder: Holder, deadline: float) -> _Node:
        """Create this holder's latch node (a protected, ephemeral sequential node)."""
        latch = self._latch(name)
        guid = uuid.uuid4().hex
        data = self._node_data(holder, since=None)
        key = (name, holder.id)
        with self._lock:
            self._pending[key] = guid
        for attempt in range(2):
            try:
                path, stat = self._wait(
                    self._client.create_async(
                        f"{latch}/{guid}{_LATCH_MARK}",
                        data,
                        acl=self._acl,
                        ephemeral=True,
                        sequence=True,
                        include_data=True,
                    ),
                    deadline,
                    "create",
                )
            except NoNodeError:
                if attempt:
                    raise
                self._known.discard(latch)
                self._ensure(latch, deadline)
                continue
            break
        return self._track(name, holder, str(path), stat)

    def _adopt(self, name: str, holder: Holder, guid: str, deadline: float) -> _Node | None:
        """Find the node of an earlier create whose answer was lost, by its GUID."""
        latch = self._latch(name)
        with self._lock:
            self._pending.pop((name, holder.id), None)
            # A stray until found: this look-up may fail too, and the create may land later.
            self._strays.add(guid)
            session = self._session_id
        for child in self._children(latch, deadline):
            if child.startswith(guid):
                path = f"{latch}/{child}"
                stat = self._wait(self._client.exists_async(path), deadline, "exists")
                if stat is not None and stat.ephemeralOwner == session:
                    with self._lock:
                        self._strays.discard(guid)
                    return self._track(name, holder, path, stat)
        return None

    def _sweep_strays(
        self, latch: str, children: list[str], mine: str, deadline: float
    ) -> list[str]:
        """Delete latch nodes of our own creates that landed after we gave up on them;
        return ``children`` without them."""
        with self._lock:
            if not self._strays:
                return children
            found = [
                c for c in children if c != mine and c.split(_LATCH_MARK, 1)[0] in self._strays
            ]
        for child in found:
            self._log.warning("zookeeper_stray_latch_node_deleted", node=f"{latch}/{child}")
            with contextlib.suppress(NoNodeError):
                self._wait(self._client.delete_async(f"{latch}/{child}"), deadline, "delete")
            with self._lock:
                self._strays.discard(child.split(_LATCH_MARK, 1)[0])
        return [c for c in children if c not in found]

    def _track(self, name: str, holder: Holder, path: str, stat: Any) -> _Node:
        node = _Node(
            election=name,
            path=path,
            holder_id=holder.id,
            token=int(stat.czxid),
            version=int(stat.version),
            session=int(stat.ephemeralOwner),
        )
        with self._lock:
            self._pending.pop((name, holder.id), None)
            self._nodes[path] = node
            self._mine[(name, holder.id)] = node
        return node

    def _stamp(self, node: _Node, holder: Holder, deadline: float) -> _Node | None:
        """Issue ``node`` as a lease, and note when it began leading, for observers.

        The note goes to ``<election>/leader`` without waiting for it: it is a write ZooKeeper
        syncs to disk, which would delay every handover by an fsync, and nothing but
        ``read()`` looks at it (claims check the latch node only).
        """
        with self._lock:
            if node.lost:
                return None
            node.issued = True
            if not self._connected and self.options.on_suspended == "lose":
                # Suspended while winning: the policy applies to this lease too (the state
                # listener only saw the nodes issued before it).
                self._lose_locked(node, SUSPENDED)
                self._doomed.add(node.path)
                return None
        note = json.dumps(
            {
                "token": node.token,
                "replica": holder.replica_id,
                "host": holder.host,
                "since": self._clock.now().isoformat(),
            },
            separators=(",", ":"),
        ).encode()
        path = f"{node.path.rsplit('/', 2)[0]}/leader"

        def written(result: Any) -> None:
            try:
                result.get()
            except NoNodeError:
                self._client.create_async(path, note, acl=self._acl)
            except KazooException:
                pass  # cosmetic: read() falls back to the latch node's creation time

        self._client.set_async(path, note).rawlink(written)
        return node

    def _retire(self, node: _Node, deadline: float) -> None:
        """Give up a former lease's node so the holder can queue anew with a new token."""
        with self._lock:
            self._drop_locked(node, node.lost or RELEASED)
            node.released = True
            if node.lost == EXPIRED:
                return
            self._doomed.add(node.path)
        self._delete(node.path, -1, deadline)

    def _delete(self, path: str, version: int, deadline: float) -> None:
        with contextlib.suppress(NoNodeError, BadVersionError):
            self._wait(self._client.delete_async(path, version), deadline, "delete")
        with self._lock:
            self._doomed.discard(path)

    def _forget(self, node: _Node, reason: str) -> None:
        with self._lock:
            self._drop_locked(node, reason)

    def _owned(self, lease: Lease) -> _Node | None:
        """This backend's own node for ``lease``, still held; raises LeaseLost otherwise.

        Returns ``None`` for a lease this instance did not create (another instance, or
        another process, acquired it): :meth:`_remote` then verifies it on the server.
        """
        with self._lock:
            node = self._nodes.get(lease.handle)
            if node is None:
                reason = self._gone.get(lease.handle)
                if reason is not None:
                    raise LeaseLost(lease.name, reason)
                return None
            if not node.issued or node.holder_id != lease.holder.id or node.token != lease.token:
                raise LeaseLost(lease.name, NOT_HOLDER)
            if node.lost:
                raise LeaseLost(lease.name, node.lost)
            if not self._connected and self.options.on_suspended == "lose" and self._started:
                # The state listener may not have run yet; the policy is the same.
                self._lose_locked(node, SUSPENDED)
                raise LeaseLost(lease.name, SUSPENDED)
            return node

    def _lease_node(self, lease: Lease) -> tuple[_Node, float]:
        """The latch node of ``lease`` (ours, or read from the server) and the call's deadline."""
        local = self._owned(lease)
        if local is None:
            deadline = self._begin()
            return self._remote(lease, deadline), deadline
        return local, self._begin_for(local)

    def _remote(self, lease: Lease, deadline: float) -> _Node:
        """Verify on the server a lease this instance did not create; one read.

        The node must exist, be the one acquired (its czxid is the token), carry the digest
        of the lease's holder id and be the lowest of the latch (a node that ever was lowest
        stays lowest until it is deleted, so that is what "was issued" means).

        Raises:
            LeaseLost: any of that is not so.
        """
        if not lease.handle.startswith(f"{self._latch(lease.name)}/"):
            raise LeaseLost(lease.name, NOT_HOLDER)
        try:
            raw, stat = self._wait(self._client.get_async(lease.handle), deadline, "get")
        except NoNodeError:
            raise LeaseLost(lease.name, DELETED) from None
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        if (
            not isinstance(data, dict)
            or data.get("holder") != _holder_digest(lease.holder.id)
            or stat.czxid != lease.token
        ):
            raise LeaseLost(lease.name, NOT_HOLDER)
        children = self._children(self._latch(lease.name), deadline)
        if not children or min(children, key=_seq) != lease.handle.rsplit("/", 1)[1]:
            raise LeaseLost(lease.name, NOT_HOLDER)
        return _Node(
            election=lease.name,
            path=lease.handle,
            holder_id=lease.holder.id,
            token=lease.token,
            version=int(stat.version),
            session=int(stat.ephemeralOwner),
            issued=True,
            local=False,
        )

    def _lost(self, node: _Node, reason: str) -> LeaseLost:
        with self._lock:
            self._lose_locked(node, reason)
            if reason in (DELETED, EXPIRED):
                self._drop_locked(node, reason)
        return LeaseLost(node.election, node.lost or reason)

    def _lose_locked(self, node: _Node, reason: str) -> None:
        if node.lost:
            return
        node.lost = reason
        self._notify_locked(node)

    def _notify_locked(self, node: _Node) -> None:
        callback = node.on_lost
        if callback is None or node.notified or node.released or self._closed:
            return
        node.notified = True
        reason = node.lost
        self._notices.put(lambda: callback(reason))

    def _drop_locked(self, node: _Node, reason: str) -> None:
        """Stop tracking ``node``; remember why, for a late renew or claim."""
        self._nodes.pop(node.path, None)
        key = (node.election, node.holder_id)
        if self._mine.get(key) is node:
            del self._mine[key]
        self._gone[node.path] = reason
        while len(self._gone) > _GONE_MEMORY:
            self._gone.popitem(last=False)

    def _arm(self, node: _Node) -> None:
        """Read ``node`` with a watch: verifies it still exists and is unchanged."""

        def checked(result: Any) -> None:
            try:
                _, stat = result.get_nowait()
            except NoNodeError:
                with self._lock:
                    if node.session == self._session_id:
                        self._lose_locked(node, DELETED)
                return
            except (KazooException, KazooTimeoutError):
                return  # connection trouble: the state listener decides, and re-arms
            if stat.version != node.version or stat.czxid != node.token:
                with self._lock:
                    self._lose_locked(node, MODIFIED)

        with contextlib.suppress(KazooException):
            self._client.get_async(node.path, watch=self._on_node_event).rawlink(checked)

    # --- kazoo callbacks (never block) ---------------------------------------------------

    def _on_state(self, state: str) -> None:
        """Follow the connection state; runs on kazoo's connection thread."""
        followups: list[Callable[[], None]] = []
        with self._cond:
            if self._closed:
                self._connected = False
                self._cond.notify_all()
                return
            if state == KazooState.CONNECTED:
                session = self._client.client_id
                sid = int(session[0]) if session else None
                if self._session_id is not None and sid != self._session_id:
                    self._drop_session_locked()
                resumed = self._session_id is not None
                self._session_id = sid
                self._connected = True
                for node in list(self._nodes.values()):
                    if node.issued and not node.lost:
                        followups.append(partial(self._arm, node))
                followups += [partial(self._delete_later, path) for path in self._doomed]
                if self._ever_connected:  # the first connect is the normal case: no line
                    self._log.info(
                        "zookeeper_reconnected",
                        session=f"{sid:#x}" if sid is not None else None,
                        resumed=resumed,
                    )
                self._ever_connected = True
            elif state == KazooState.SUSPENDED:
                self._connected = False
                if self.options.on_suspended == "lose":
                    for node in list(self._nodes.values()):
                        if node.issued and not node.lost:
                            self._lose_locked(node, SUSPENDED)
                            self._doomed.add(node.path)
                self._log.warning("zookeeper_suspended", policy=self.options.on_suspended)
            elif state == KazooState.LOST:
                self._connected = False
                self._drop_session_locked()
                self._log.warning("zookeeper_session_lost")
            self._cond.notify_all()
            waiters = list(self._state_waiters)
        for event in waiters:
            event.set()
        for followup in followups:
            self._notices.put(followup)

    def _drop_session_locked(self) -> None:
        """The session is gone: so is every node it owned."""
        for node in list(self._nodes.values()):
            self._lose_locked(node, EXPIRED)
            self._drop_locked(node, EXPIRED)
        self._pending.clear()
        self._strays.clear()  # their nodes, if any, ended with the session
        self._doomed.clear()
        self._session_id = None

    def _on_node_event(self, event: WatchedEvent) -> None:
        """A watch fired; runs on kazoo's callback thread."""
        with self._lock:
            waiters = self._waiters.pop(event.path, [])
            node = self._nodes.get(event.path)
            if node is not None and node.issued and not node.lost:
                if event.type == EventType.DELETED:
                    self._lose_locked(node, DELETED)
                    self._drop_locked(node, DELETED)
                elif event.type == EventType.CHANGED:
                    self._lose_locked(node, MODIFIED)
        for woken in waiters:
            woken.set()

    def _delete_later(self, path: str) -> None:
        with self._lock:
            if path not in self._doomed or not self._connected:
                return

        def done(result: Any) -> None:
            try:
                result.get_nowait()
            except NoNodeError:
                pass  # gone already, which is what we wanted
            except Exception:
                return  # still doomed: retried at the next reconnect or acquire
            with self._lock:
                self._doomed.discard(path)

        with contextlib.suppress(KazooException):
            self._client.delete_async(path).rawlink(done)

    def _notify_loop(self) -> None:
        while True:
            notice = self._notices.get()
            if notice is None:
                return
            try:
                notice()
            except Exception:  # a failing listener must not stop later notices
                self._log.exception("zookeeper_notice_failed")

    # --- helpers -------------------------------------------------------------------------

    def _begin(self, limit: float | None = None) -> float:
        """Wait for a live session; return this call's deadline for its requests.

        Args:
            limit: a monotonic instant the deadline must not pass (for bounded waits).
        """
        now = time.monotonic()
        with self._cond:
            if self._closed:
                raise BackendUnavailable(self.url, "backend closed")
            wait = self._op_timeout
            if self._session_id is None:
                # A new session must be established: the session and the answers share one
                # deadline, so an unreachable ensemble costs connect_wait, not more.
                wait = max(wait, self.options.connect_wait)
            deadline = now + wait if limit is None else min(now + wait, limit)
            if not self._started:
                self._started = True
                self._client.start_async()
            while not self._connected:
                remaining = deadline - time.monotonic()
                if self._closed:
                    raise BackendUnavailable(self.url, "backend closed")
                if remaining <= 0:
                    cause = f" (last error: {self._connect_error})" if self._connect_error else ""
                    raise BackendUnavailable(
                        self.url, f"no ZooKeeper session within {wait:g} s{cause}"
                    )
                self._cond.wait(remaining)
        return deadline

    def _begin_for(self, node: _Node) -> float:
        """Like :meth:`_begin`, for a call acting on ``node``'s lease.

        Nothing is sent while the connection is suspended: kazoo would queue the request
        and send it after a reconnect, long after this call gave up on it.
        """
        with self._lock:
            connected = self._connected
        if not connected:
            raise BackendUnavailable(
                self.url, "connection suspended: the lease cannot be confirmed now"
            )
        deadline = self._begin()
        with self._lock:
            if node.local and node.session != self._session_id:
                self._lose_locked(node, EXPIRED)
                raise LeaseLost(node.election, EXPIRED)
        return deadline

    def _wait(self, result: Any, deadline: float, what: str) -> Any:
        try:
            return result.get(timeout=max(0.0, deadline - time.monotonic()))
        except KazooTimeoutError:
            raise BackendUnavailable(
                self.url, f"no answer to {what} within op_timeout ({self._op_timeout:g} s)"
            ) from None

    def _children(self, path: str, deadline: float) -> list[str]:
        try:
            children = self._wait(self._client.get_children_async(path), deadline, "getChildren")
        except NoNodeError:
            return []
        return [str(c) for c in children]

    def _run_keys(self, job_dir: str, deadline: float) -> list[int]:
        keys = []
        for child in self._children(job_dir, deadline):
            with contextlib.suppress(ValueError):
                keys.append(int(child))
        return keys

    def _victims(
        self, job_dir: str, run: RunRecord, retention: Retention, deadline: float
    ) -> list[tuple[int, int]]:
        """Run nodes to delete with the claim of ``run``, as (fire key, version read): the
        finished ones beyond the newest ``limit``, never one within ``protect`` seconds
        before ``run`` (a new leader looks back that far).

        The candidates are read all at once (one round trip); an unfinished or unreadable
        one is kept, so trimming never frees a fire that is claimed or running.
        """
        keys = sorted(k for k in self._run_keys(job_dir, deadline) if k != run.key)
        excess = min(len(keys) + 1 - max(retention.limit, 0), _TRIM_BATCH)
        if excess <= 0:
            return []
        cutoff = run.key - round(retention.protect * 1000)
        candidates = list(itertools.islice((k for k in keys if k < cutoff), excess))
        pending = [self._client.get_async(f"{job_dir}/{self._key_name(k)}") for k in candidates]
        victims: list[tuple[int, int]] = []
        for key, result in zip(candidates, pending, strict=True):
            try:
                raw, stat = self._wait(result, deadline, "get")
            except NoNodeError:
                continue  # deleted meanwhile: nothing to trim
            if _finished(raw):
                victims.append((key, int(stat.version)))
        return victims

    def _resent(self, run_path: str, run: RunRecord, deadline: float) -> RunRecord | None:
        """The stored record of a fire claim found taken, if ``run.attempt`` stored it."""
        try:
            raw, _ = self._wait(self._client.get_async(run_path), deadline, "get")
        except NoNodeError:
            return None  # given back since the create found it: the fire was taken then
        if _refusal(raw, run) is not None:
            return None
        return RunRecord.from_json(raw)

    def _ensure(self, path: str, deadline: float) -> None:
        """Create ``path`` and its missing parents, with our ACL; cached once known."""
        if path in self._known:
            return
        current = ""
        for segment in path.strip("/").split("/"):
            current = f"{current}/{segment}"
            if current in self._known:
                continue
            with contextlib.suppress(NodeExistsError):
                self._wait(
                    self._client.create_async(current, b"", acl=self._acl), deadline, "create"
                )
            self._known.add(current)

    def _record(self, name: str, raw: bytes, stat: Any, noted: bytes = b"") -> LeaseRecord:
        try:
            data = json.loads(raw)
            note = json.loads(noted) if noted else {}
        except ValueError:
            data, note = {}, {}
        if not isinstance(data, dict):
            data = {}
        if isinstance(note, dict) and note.get("token") == int(stat.czxid):
            data["since"] = note.get("since")  # the leader's own note of when it began
        since_text = data.get("since")
        since = (
            datetime.fromisoformat(since_text)
            if isinstance(since_text, str)
            else datetime.fromtimestamp(stat.ctime / 1000, UTC)
        )
        return LeaseRecord(
            name=name,
            replica_id=str(data.get("replica", "")),
            host=str(data.get("host", "")),
            token=int(stat.czxid),
            since=since,
            ttl_left=None,
        )

    def _capped_ttl(self, ttl: float) -> float:
        """``ttl``, capped at the negotiated session timeout (the node lives no longer)."""
        negotiated = self._negotiated
        if negotiated is None or ttl <= negotiated:
            return ttl
        if not self._clamp_logged:
            self._clamp_logged = True
            self._log.warning(
                "zookeeper_lease_ttl_capped",
                lease_ttl=ttl,
                session_timeout=negotiated,
                detail="the server granted a shorter session than lease_ttl; "
                "check its maxSessionTimeout",
            )
        return negotiated

    def _capture_negotiated_timeout(self) -> None:
        """Record the session timeout the server grants at each connect, and connect errors.

        kazoo keeps the negotiated value to itself: its connection handler's ``_connect``
        returns the read timeout it derives as two thirds of it. Wrapping that private method
        is the least intrusive way to see it; without it (a future kazoo) leases are simply
        not capped, and the configured timeout must be within the server's bounds. The
        wrapper also keeps the last connect error (a refused certificate, a refused
        connection) for the message of a call that found no session.
        """
        connection = getattr(self._client, "_connection", None)
        connect = getattr(connection, "_connect", None)
        if connection is None or not callable(connect):
            return

        def capturing(*args: Any, **kwargs: Any) -> Any:
            try:
                result = connect(*args, **kwargs)
            except Exception as exc:
                self._connect_error = str(exc) or type(exc).__name__
                raise
            self._connect_error = ""
            with contextlib.suppress(TypeError, ValueError, IndexError):
                self._negotiated = round(float(result[0]) * 1.5) / 1000.0
            return result

        connection._connect = capturing

    def _node_data(self, holder: Holder, since: datetime | None) -> bytes:
        return json.dumps(
            {
                "holder": _holder_digest(holder.id),
                "replica": holder.replica_id,
                "host": holder.host,
                "since": since.isoformat() if since is not None else None,
            },
            separators=(",", ":"),
        ).encode()

    def _run_dir(self, name: str, job: str) -> str:
        return f"{self._election(name)}/runs/{_job_segment(job)}"

    def _election(self, name: str) -> str:
        _check_segment(name, "cluster", "election name")
        return f"{self._root}/{name}"

    def _latch(self, name: str) -> str:
        return f"{self._election(name)}/latch"

    @staticmethod
    def _key_name(key: int) -> str:
        # Zero-padded so that zkCli lists fires in order; parsed back with int().
        return f"{key:015d}"

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Translate kazoo's exceptions into Baton's, naming this backend."""
        try:
            yield
        except BackendError:
            raise
        except NoAuthError:
            raise BackendAuthError(
                self.url,
                f"{what}: permission denied by a ZooKeeper ACL: "
                "credentials missing or wrong (user:password in the URL)",
            ) from None
        except AuthFailedError:
            raise BackendAuthError(self.url, f"{what}: authentication failed") from None
        except ConnectionClosedError:
            raise BackendUnavailable(self.url, f"{what}: backend closed") from None
        except SessionExpiredError:
            raise BackendUnavailable(self.url, f"{what}: session expired") from None
        except _UNAVAILABLE as exc:
            raise BackendUnavailable(self.url, f"{what}: no answer ({type(exc).__name__})") from exc
        except KazooException as exc:
            raise BackendError(self.url, f"{what}: unexpected error {type(exc).__name__}") from exc


__all__ = [
    "DEFAULT_CHROOT",
    "ON_SUSPENDED",
    "ZooKeeperBackend",
    "ZooKeeperOptions",
    "ZooKeeperTarget",
    "check_lease_timings",
    "parse_url",
]
