/*
 * Preloaded before libfaketime so that CPython's timed waits work under a faked
 * CLOCK_MONOTONIC (the chaos suite's clock faults; see tests/chaos/faketime.py).
 *
 * libfaketime 0.9.10 fakes clock_gettime(CLOCK_MONOTONIC) but does not intercept
 * sem_clockwait(), which CPython 3.11 uses for every lock, Event, Condition and Queue wait
 * with a timeout. The absolute deadline CPython computes is on the *fake* monotonic
 * timeline, the kernel waits on the real one, and the wait never ends. This shim turns the
 * deadline into "the same number of seconds from now" on the real clock (read with a raw
 * syscall, which libfaketime does not see) and calls the real sem_clockwait.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <semaphore.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

typedef int (*sem_clockwait_fn)(sem_t *, clockid_t, const struct timespec *);

static void to_real(clockid_t clock, const struct timespec *abstime, struct timespec *out) {
    struct timespec fake, real;
    clock_gettime(clock, &fake);                 /* through libfaketime */
    syscall(SYS_clock_gettime, clock, &real);    /* the kernel's own */
    long long left = (long long)(abstime->tv_sec - fake.tv_sec) * 1000000000LL
                     + (abstime->tv_nsec - fake.tv_nsec);
    if (left < 0) left = 0;
    long long when = (long long)real.tv_sec * 1000000000LL + real.tv_nsec + left;
    out->tv_sec = when / 1000000000LL;
    out->tv_nsec = when % 1000000000LL;
}

int sem_clockwait(sem_t *sem, clockid_t clock, const struct timespec *abstime) {
    static sem_clockwait_fn next = NULL;
    if (next == NULL) next = (sem_clockwait_fn)dlsym(RTLD_NEXT, "sem_clockwait");
    struct timespec real;
    to_real(clock, abstime, &real);
    return next(sem, clock, &real);
}
