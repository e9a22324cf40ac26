"""Leadership: the election loop (client-go shape) and what sits beside it, one file each.

``elector`` the loop and its callbacks; ``term`` and ``lease`` the values it holds;
``events`` what it tells listeners; ``timings`` how it paces itself; ``controls`` the
operator's resign and pause requests; ``presence`` and ``members`` this replica's record and
others'; ``health`` the stall watchdog, backend state and liveness; ``hooks`` the public
leadership hooks; ``view`` what firing sees of all this. Storage lives below, in
:mod:`scheduler.backends`.
"""
