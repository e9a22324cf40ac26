"""Baton inside other schedulers' processes: one module per technology (``celery``).

Nothing in ``scheduler`` imports this package; each module needs its optional extra
(``pip install 'baton[celery]'``).
"""
