"""Firing: a fire flows trigger -> runner -> claims -> backend -> job -> claims (outcome).

The runner is APScheduler glue, lanes and execution; :mod:`~scheduler.firing.claims` owns a
fire's fate; :mod:`~scheduler.firing.isolation` runs process jobs; run records are
:mod:`~scheduler.firing.runs`.
"""
