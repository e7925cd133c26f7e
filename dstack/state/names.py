"""Run names people can say aloud and tell apart: adjective-noun-number."""

from __future__ import annotations

import random

_ADJECTIVES = (
    "amber",
    "brave",
    "calm",
    "clever",
    "eager",
    "fuzzy",
    "gentle",
    "happy",
    "jolly",
    "keen",
    "lucky",
    "mellow",
    "nimble",
    "proud",
    "quiet",
    "rapid",
    "shiny",
    "sunny",
    "swift",
    "tidy",
    "vivid",
    "witty",
    "young",
    "zesty",
)
_NOUNS = (
    "badger",
    "beaver",
    "bison",
    "crane",
    "eagle",
    "falcon",
    "ferret",
    "gecko",
    "heron",
    "ibis",
    "koala",
    "lemur",
    "lynx",
    "marten",
    "otter",
    "panda",
    "puffin",
    "quail",
    "raven",
    "salmon",
    "tapir",
    "walrus",
    "wombat",
    "yak",
)


def new_run_name() -> str:
    return f"{random.choice(_ADJECTIVES)}-{random.choice(_NOUNS)}-{random.randint(1, 9999)}"
