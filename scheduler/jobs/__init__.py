"""Defining jobs: the ``@singleton_job`` decorator and its spec, schedules, ``JobContext``.

Nothing here talks to a backend or starts a thread: these are the values the firing side
(:mod:`scheduler.firing`) schedules and runs.
"""
