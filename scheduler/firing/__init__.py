"""Firing: a fire flows trigger -> runner -> claims -> backend -> job -> claims (outcome).

The runner is the assembly; :mod:`~scheduler.firing.fireloop` hands every job's fires
over ahead of their instants, :mod:`~scheduler.firing.dispatch`
claims and starts fires in batches and :mod:`~scheduler.firing.execution` runs them on the
job pool; :mod:`~scheduler.firing.claims` owns a fire's fate; :mod:`~scheduler.firing.isolation`
runs process jobs; run records are the ledger's values, :mod:`~scheduler.backends.runs`.
"""
