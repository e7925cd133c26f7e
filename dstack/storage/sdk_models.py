"""botocore's service models, parsed once per botocore release and kept pickled.

Every `s3://` command loads about 3.5 MB of JSON (the S3 model, its endpoint rules and the
endpoint catalogue) with an OrderedDict per object; the same data unpickles in about a third of
the time. The pickles live in DSTACK_HOME/cache, written by this user only, keyed by each model
file's path, size and mtime, so a botocore upgrade simply misses the cache."""

from __future__ import annotations

import hashlib
import os
import pickle
from contextlib import suppress
from pathlib import Path
from typing import Any

from dstack.atomic import write_bytes_atomic

# What unpickling a missing, truncated or otherwise damaged file can raise.
_DAMAGED = (
    OSError,
    EOFError,
    pickle.UnpicklingError,
    ValueError,
    AttributeError,
    ImportError,
    IndexError,
    TypeError,
)


def cache_models(session: Any, folder: Path) -> None:
    """Make ``session`` load its models through the pickle cache in ``folder``."""
    from botocore.loaders import JSONFileLoader

    class PickledModels(JSONFileLoader):  # type: ignore[misc]
        def load_file(self, file_path: str) -> Any:
            for ext in (".json", ".json.gz"):
                try:
                    st = os.stat(file_path + ext)
                except OSError:
                    continue
                key = f"{file_path}{ext}:{st.st_size}:{st.st_mtime_ns}"
                cached = folder / (hashlib.sha1(key.encode()).hexdigest() + ".pickle")
                try:
                    return pickle.loads(cached.read_bytes())
                except _DAMAGED:  # missing or damaged: parse the JSON again
                    data = super().load_file(file_path)
                    if data is not None:
                        with suppress(OSError):  # a read-only home only loses the speed-up
                            write_bytes_atomic(cached, pickle.dumps(data, pickle.HIGHEST_PROTOCOL))
                    return data
            return None

    session.get_component("data_loader").file_loader = PickledModels()
