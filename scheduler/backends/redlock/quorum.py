"""One call on every primary at once, in a bounded pool, and the answers counted.

A :class:`Fanout` owns a fixed set of worker threads (a ``ThreadPoolExecutor``, never a
thread per call) and sends one callable per primary to it. It waits until every primary
answered, until ``enough`` says the answers so far decide the call, or until the call's
bound: a primary that has not answered by then counts as unavailable (its request may
still land; every step is written to be safe when it does). The waits are on the process's
real monotonic clock: they bound sockets, not leases (lease validity is measured on the
injected clock, :mod:`.lease`).

Every answer is a value or the exception the primary's call raised (redis-py's errors are
already Baton's there: the per-primary objects are the Redis backend's role objects).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Generic, TypeVar

from scheduler.errors import BackendError, BackendPermanentError, BackendUnavailable

_T = TypeVar("_T")


class NoAnswer(BackendUnavailable):
    """A primary that did not answer within the call's bound."""


class Answers(Generic[_T]):
    """The answers of one fan-out, one per primary, in the URL's order.

    Attributes:
        values: per primary, its answer or the exception it raised (:class:`NoAnswer` when
            it did not answer in time).
    """

    def __init__(self, values: list[_T | BaseException], labels: Sequence[str]) -> None:
        self.values = values
        self._labels = labels

    def ok(self) -> list[tuple[int, _T]]:
        """``(primary index, answer)`` of every primary that answered without an error."""
        return [(i, v) for i, v in enumerate(self.values) if not isinstance(v, BaseException)]

    def errors(self, kind: type[BaseException] = BaseException) -> list[BaseException]:
        """The exceptions of ``kind`` the primaries raised."""
        return [v for v in self.values if isinstance(v, kind)]

    def unexpected(self) -> None:
        """Re-raise the first exception that is not a :class:`BackendError` nor one of the
        lease and claim outcomes (a bug must not pass as an unavailable primary)."""
        from scheduler.errors import ClaimLost, FireNotDue, LeaseLost

        for value in self.values:
            if isinstance(value, BaseException) and not isinstance(
                value, BackendError | LeaseLost | ClaimLost | FireNotDue
            ):
                raise value

    def failure(self, url: str, what: str, quorum: int) -> BackendError:
        """The error of a call that did not reach ``quorum`` primaries: the first permanent
        refusal (credentials, ACL: not worth retrying), else :class:`BackendUnavailable`
        naming each primary's problem."""
        self.unexpected()
        for value in self.values:
            if isinstance(value, BackendPermanentError):
                return value
        problems = [
            f"{label}: {_short(value)}"
            for label, value in zip(self._labels, self.values, strict=True)
            if isinstance(value, BaseException)
        ]
        return BackendUnavailable(
            url,
            f"{what} needs a majority ({quorum} of {len(self.values)}) of the primaries; "
            f"{'; '.join(problems) or 'too few agreed'}",
        )


def _short(error: BaseException) -> str:
    text = str(error)
    # A backend error repeats the (redacted) URL: keep what follows it.
    _, sep, rest = text.partition(": ")
    return (rest if sep and text.startswith("backend ") else text)[:160]


#: Seconds a fan-out still waits for the other primaries once the answers so far decide
#: the call (0.1 s): on loopback or a LAN a live primary has answered by then even on a
#: loaded host; a primary that is down or cut off costs a call this much, not its bound.
STRAGGLER_GRACE = 0.1


class Fanout:
    """A bounded pool that sends one call to every primary at once.

    A primary that does not answer holds a thread per call until its socket's bound: so
    that one stopped primary cannot take every thread (and starve the calls to the healthy
    ones), a primary with ``workers / N`` calls still unfinished gets no more until one
    finishes; a call meanwhile counts it as not answering (:class:`NoAnswer`).

    Args:
        labels: each primary's ``host:port``, for messages.
        workers: the pool's threads; a call takes one per primary while it runs, so a pool
            of ``k x N`` threads serves ``k`` fan-outs at once (more wait in its queue).
        name: the threads' name prefix.
    """

    def __init__(self, labels: Sequence[str], workers: int, name: str) -> None:
        self.labels = tuple(labels)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        self._most = max(1, workers // max(1, len(self.labels)))
        self._unfinished = [0] * len(self.labels)
        self._lock = threading.Lock()

    def _submit(self, index: int, call: Callable[[], _T]) -> Future[_T] | None:
        with self._lock:
            if self._unfinished[index] >= self._most:
                return None
            self._unfinished[index] += 1
        try:
            future = self._pool.submit(call)
        except RuntimeError:  # shut down (the backend was closed): no answer
            with self._lock:
                self._unfinished[index] -= 1
            return None
        future.add_done_callback(lambda _: self._finished(index))
        return future

    def _finished(self, index: int) -> None:
        with self._lock:
            self._unfinished[index] -= 1

    def each(
        self,
        calls: Sequence[Callable[[], _T] | None],
        timeout: float,
        enough: Callable[[Answers[_T]], bool] | None = None,
    ) -> Answers[_T]:
        """Run ``calls[i]`` on primary ``i`` (``None`` entries are skipped and answer
        :class:`NoAnswer`), all at once; wait for every answer or ``timeout`` seconds, and
        once ``enough`` is true of the answers so far, at most :data:`STRAGGLER_GRACE`
        more."""
        pending: dict[Future[_T], int] = {}
        for i, call in enumerate(calls):
            future = self._submit(i, call) if call is not None else None
            if future is not None:
                pending[future] = i
        values: list[_T | BaseException] = [
            NoAnswer(label, "no answer in time") for label in self.labels[: len(calls)]
        ]
        answers = Answers(values, self.labels)
        deadline = time.monotonic() + timeout
        decided = False
        waiting = set(pending)
        while waiting:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            done, waiting = wait(waiting, remaining, FIRST_COMPLETED)
            for future in done:
                index = pending[future]
                error = future.exception()
                values[index] = error if error is not None else future.result()
            if enough is not None and not decided and enough(answers):
                # Decided: the rest get a short grace, not the whole bound. A live primary
                # answers within it, so its copy of a claim is in place before the caller's
                # next step (a start, an outcome) reaches it; a silent one costs no more.
                decided = True
                deadline = min(deadline, time.monotonic() + STRAGGLER_GRACE)
        return answers

    def close(self) -> None:
        """Stop taking calls; running ones finish on their own (bounded by their sockets)."""
        self._pool.shutdown(wait=False, cancel_futures=True)


def most_common(items: Sequence[str], default: str) -> str:
    """The most frequent of ``items`` (the first seen on a tie), or ``default``."""
    if not items:
        return default
    return Counter(items).most_common(1)[0][0]


__all__ = ["STRAGGLER_GRACE", "Answers", "Fanout", "NoAnswer", "most_common"]
