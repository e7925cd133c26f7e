"""The service layer: what dstack does for a caller, over typed inputs and outputs.

The CLI parses arguments, calls these functions and renders what they return; the Python
API (`import dstack`, dstack.service.api) is the same functions for notebooks and scripts.
Nothing here prints or asks: questions (create these cloud hosts?) come back to the caller
through a callback, and progress goes to a ``notes`` callback.

    session    one home's state database and store, opened once per command or call
    submit     prepare and record a run (cloud hosts reviewed through ``confirm``), rerun
    review     the cloud hosts a new run needs: recorded, previewed, confirmed or withdrawn
    start      start a recorded run attached or detached; attach, follow logs, wait
    runs       read runs: the listing, one run, its jobs, its reproducibility record
    control    stop and remove runs
    artifacts  list and download a run's or a tag's files
    plan       where each job would run, its price and stack preview; export as Pulumi
    gc         what killed runs left behind: cloud stacks and temporary files
    api        the documented Python API over all of the above

Every module imports lazily what only some calls need, so `dstack --help` stays fast.
"""
