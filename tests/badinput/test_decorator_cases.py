"""Bad-input catalogue: ``@singleton_job`` arguments and jobs modules that misbehave at import.

Every case runs ``baton run --jobs badjobs`` on an embedded backend under ``{tmp}``: a bad
definition stops the replica at start-up (when the module is imported), before the backend
is opened, with one line naming the job (or the module) and exit 2.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.badinput.harness import Case, check

RUN = ("run", "--jobs", "badjobs", "--backend", "sqlite:///{tmp}/b.db")
HEADER = "import datetime, sys\nfrom scheduler import singleton_job\n"


def job(id: str, arguments: str, says: str = "'bad.job'") -> Case:
    """A module defining one job ``bad.job`` with ``arguments``: one line naming the job."""
    body = f"@singleton_job(name='bad.job', {arguments})\ndef job(ctx): ...\n"
    return Case(id, RUN, exit=2, jobs=HEADER + body, says=says)


def module(id: str, body: str, says: str = "'badjobs'") -> Case:
    """A jobs module with ``body``: one line naming the module (or the job)."""
    return Case(id, RUN, exit=2, jobs=HEADER + body, says=says)


CASES = [
    # misfire_grace: finite seconds from 1 to 604800 (7 days); not a bool or a string.
    job("misfire-grace-nan", "every='1s', misfire_grace=float('nan')"),
    job("misfire-grace-inf", "every='1s', misfire_grace=float('inf')"),
    job("misfire-grace-minus-inf", "every='1s', misfire_grace=float('-inf')"),
    job("misfire-grace-zero", "every='1s', misfire_grace=0"),
    job("misfire-grace-negative", "every='1s', misfire_grace=-5"),
    job("misfire-grace-under-a-second", "every='1s', misfire_grace=0.5"),
    job("misfire-grace-huge", "every='1s', misfire_grace=1e300"),
    job("misfire-grace-bigint", "every='1s', misfire_grace=10**400"),
    job("misfire-grace-bool", "every='1s', misfire_grace=True"),
    job("misfire-grace-string", "every='1s', misfire_grace='60'"),
    job("misfire-grace-none", "every='1s', misfire_grace=None"),
    # every: 100 ms to 366 days, whole milliseconds, finite, not a bool.
    job("every-nan", "every=float('nan')"),
    job("every-inf", "every=float('inf')"),
    job("every-minus-inf", "every=float('-inf')"),
    job("every-zero", "every=0"),
    job("every-negative", "every=-5"),
    job("every-huge-float", "every=1e300"),
    job("every-overflows-timedelta", "every=10**12"),
    job("every-huge-string", "every='99999999999d'"),
    job("every-huge-timedelta", "every=datetime.timedelta(days=999_999_999)"),
    job("every-negative-timedelta", "every=datetime.timedelta(seconds=-1)"),
    job("every-below-100-ms", "every='10ms'"),
    job("every-sub-millisecond", "every=0.1005"),
    job("every-bool", "every=True"),
    job("every-empty-string", "every=''"),
    job("every-word", "every='soon'"),
    job("every-arabic-indic-digit", "every='\\u0661s'"),
    job("every-long-string", "every='1s' * 10000"),
    job("every-list", "every=[1]"),
    # cron: one line of printable ASCII, 5 fields, able to fire.
    job("cron-not-a-string", "cron=5"),
    job("cron-newline", "cron='* * * *\\n*'"),
    job("cron-huge", "cron='* * * * ' + '1,' * 10000 + '1'"),
    job("cron-unicode", "cron='\\uff0a * * * *'"),
    job("cron-bad-field", "cron='61 * * * *'"),
    job("cron-zero-step", "cron='*/0 * * * *'"),
    job("cron-never-fires", "cron='0 0 31 2 *'"),
    job("cron-and-every", "cron='* * * * *', every='1s'"),
    job("no-schedule", "misfire_grace=60"),
    # timezone: an IANA name, with cron only.
    job("timezone-unknown", "cron='0 3 * * *', timezone='Mars/Olympus'"),
    job("timezone-path", "cron='0 3 * * *', timezone='../../../etc/passwd'"),
    job("timezone-number", "cron='0 3 * * *', timezone=5"),
    job("timezone-huge", "cron='0 3 * * *', timezone='A' * 100000"),
    job("timezone-newline", "cron='0 3 * * *', timezone='UTC\\n'"),
    job("timezone-with-every", "every='1s', timezone='UTC'"),
    # catch_up, isolation, on_lost.
    job("catch-up-unknown", "every='1s', catch_up='sometimes'"),
    job("catch-up-none", "every='1s', catch_up=None"),
    job("catch-up-list", "every='1s', catch_up=['all']"),
    job("isolation-unknown", "every='1s', isolation='fork'"),
    job("on-lost-not-callable", "every='1s', on_lost=5"),
    # name: refused, never replaced; the documented charset and length.
    module("name-empty", "@singleton_job(every='1s', name='')\ndef job(ctx): ...\n", "empty"),
    module("name-space", "@singleton_job(every='1s', name='a b')\ndef job(ctx): ...\n", "name"),
    module(
        "name-newline", "@singleton_job(every='1s', name='a\\nb')\ndef job(ctx): ...\n", "a\\nb"
    ),
    module("name-slash", "@singleton_job(every='1s', name='a/b')\ndef job(ctx): ...\n", "name"),
    module("name-long", "@singleton_job(every='1s', name='j' * 201)\ndef job(ctx): ...\n", "name"),
    module(
        "name-2-mb", "@singleton_job(every='1s', name='j' * 2_000_000)\ndef j(ctx): ...\n", "name"
    ),
    module("name-unicode", "@singleton_job(every='1s', name='jöb')\ndef job(ctx): ...\n", "name"),
    module("name-number", "@singleton_job(every='1s', name=5)\ndef job(ctx): ...\n", "string"),
    module(
        "name-leading-dash", "@singleton_job(every='1s', name='-j')\ndef job(ctx): ...\n", "name"
    ),
    module(
        "name-default-unicode",
        "@singleton_job(every='1s')\ndef jöb(ctx): ...\n",
        "pass name=",
    ),
    # isolation="process" needs a function a child can import by name: refused at start-up.
    module(
        "process-lambda",
        "job = singleton_job(every='1s', name='p.l', isolation='process')(lambda ctx: None)\n",
        "'p.l'",
    ),
    module(
        "process-nested",
        "def make():\n"
        "    @singleton_job(every='1s', name='p.n', isolation='process')\n"
        "    def inner(ctx): ...\n"
        "make()\n",
        "'p.n'",
    ),
    module(
        "process-name-rebound",
        "@singleton_job(every='1s', name='p.r', isolation='process')\n"
        "def job(ctx): ...\n"
        "job = None\n",
        "'p.r'",
    ),
    # A jobs module that ends the process or raises a BaseException at import.
    module("import-sys-exit", "sys.exit()\n"),
    module("import-sys-exit-3", "sys.exit(3)\n"),
    module("import-sys-exit-message", "sys.exit('bye\\nforged line')\n"),
    module("import-keyboard-interrupt", "raise KeyboardInterrupt\n"),
    module("import-generator-exit", "raise GeneratorExit\n"),
    module("import-custom-base-exception", "class Boom(BaseException): ...\nraise Boom('x')\n"),
    module("import-error-huge-message", "raise RuntimeError('x' * 2_000_000)\n"),
    module("import-error-bad-str", "class E(Exception):\n    __str__ = None\nraise E()\n"),
    module("import-recursion", "def f(): f()\nf()\n"),
    module("import-syntax-error", "def (:\n"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_definition(case: Case, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """One line naming the job or module, exit 2, before the backend is touched."""
    check(case, tmp_path, request)
    assert not (tmp_path / "b.db").exists(), "the replica touched the backend before failing"
