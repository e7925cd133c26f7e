"""The dstack agent: runs on a host (pool server, cloud VM) next to one job and writes the
job's log, status and artifacts straight to the bucket, so the laptop may go away.

It is shipped to the host as a zipapp (dstack.execution.agent_bundle) holding this package and
the few stdlib-only modules of dstack it reuses (manifests, blobs, atomic writes), so a host
needs nothing but python3 >= 3.9: nothing here may import beyond the standard library and
those modules, or use syntax and calls newer than Python 3.9.
"""
