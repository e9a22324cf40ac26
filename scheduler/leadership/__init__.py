"""Leadership: the election loop (client-go shape), the lease and term values, timings,
leadership hooks and presence. Storage lives below, in :mod:`scheduler.backends`."""
