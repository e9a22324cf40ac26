"""Job and hook modules that test replicas load by dotted path (``BATON_JOBS=tests.jobs.replica``,
``--jobs tests.jobs.abort``); unit tests import them directly. One module per scenario family."""
