"""How dstack reaches a cloud host, and who else may: the run's own SSH key pair, and the
single address range the host's SSH rule admits (this machine's public address by default)."""

from __future__ import annotations

import ipaddress
import os
import shutil
from functools import lru_cache
from pathlib import Path

from dstack.backends.cloud.limits import CloudLimits
from dstack.errors import CloudError
from dstack.home import Home

WHATS_MY_IP = "https://checkip.amazonaws.com"


def keys_dir(home: Home) -> Path:
    return home.root / "keys"


def run_key(home: Home, run: str) -> tuple[Path, str]:
    """The run's ed25519 key pair (created once, private key 0600): its private key file and
    its public key line. The key opens only this run's hosts and is deleted with its stacks."""
    folder = keys_dir(home) / run
    private, public = folder / "id_ed25519", folder / "id_ed25519.pub"
    if not public.exists():
        from cryptography.hazmat.primitives import serialization as ser
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.OpenSSH, ser.NoEncryption())
        fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
        line = key.public_key().public_bytes(ser.Encoding.OpenSSH, ser.PublicFormat.OpenSSH)
        public.write_text(f"{line.decode()} dstack-{run}\n")
    return private, public.read_text().strip()


def forget_run_key(home: Home, run: str) -> None:
    shutil.rmtree(keys_dir(home) / run, ignore_errors=True)


def known_hosts(home: Home, stack: str) -> Path:
    """Each VM's host key is pinned on first contact into a file of its own: cloud addresses
    are reused by other VMs later, so they must not share the pool's known_hosts."""
    folder = home.root / "pulumi" / "known_hosts"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / stack


def caller_cidr(limits: CloudLimits) -> str:
    """The address range the SSH rule admits: configured, or this machine's public address.
    `dstack run` gives it to the stack and `dstack plan` shows it: one answer for both."""
    return limits.allowed_cidr or _public_address(address_url())


def cidr_source(limits: CloudLimits) -> str:
    """Where caller_cidr's answer comes from, in words."""
    return "allowed_cidr in config.yaml" if limits.allowed_cidr else "this machine's public address"


def address_url() -> str:
    """The service that tells this machine's public address (DSTACK_PUBLIC_ADDRESS_URL when
    set: a proxy, or a service of one's own)."""
    return os.environ.get("DSTACK_PUBLIC_ADDRESS_URL") or WHATS_MY_IP


@lru_cache(maxsize=1)
def _public_address(url: str) -> str:
    """This machine's address as the internet sees it, as a one-address range (asked once)."""
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            address = ipaddress.ip_address(answer.read(100).decode().strip())
    except (OSError, ValueError) as e:
        raise CloudError(
            f"Cannot look up this machine's public address at {url} ({e}); a cloud host's "
            "SSH rule admits only that address.",
            hint="set allowed_cidr under the cloud in DSTACK_HOME/config.yaml, e.g. "
            "allowed_cidr: 203.0.113.7/32",
        ) from None
    return f"{address}/{address.max_prefixlen}"
