"""Where jobs can run besides this machine and the pool: cloud offers from the shipped catalog,
matched to a job's minimum resources within the limits set per cloud."""
