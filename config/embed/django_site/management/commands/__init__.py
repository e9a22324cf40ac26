"""``manage.py baton_worker``: see baton_worker.py."""
