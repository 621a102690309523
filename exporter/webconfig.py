"""`--web-config`: TLS and basic auth for every endpoint of `serve`.

The file follows Prometheus' exporter-toolkit so operators can reuse theirs::

    tls_server_config:
      cert_file: server.crt      # relative paths: from the web config's directory
      key_file: server.key
      min_version: TLS12         # optional: TLS12 (default) or TLS13
    basic_auth_users:
      prometheus: $2b$12$...     # bcrypt hash (htpasswd -nBC 12 "" | tr -d ':\\n')

Unknown keys are rejected: a misspelt ``basic_auth_users`` must not leave the
endpoints open while the operator believes they are protected.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import yaml

__all__ = ["WebConfig", "WebConfigError", "load_web_config"]

_TOP = {"tls_server_config", "basic_auth_users"}
_TLS = {"cert_file", "key_file", "min_version"}
_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}

#: Checked against when the user name is unknown, so an unknown name costs
#: as much time as a wrong password (no user enumeration by timing).
_DUMMY_HASH = b"$2b$10$ESfc3ri38xW2VdBp2QXBJOLf78xs2eaAEe2MAjxQbj6AbxFdARhYS"


class WebConfigError(Exception):
    """The web config is unusable; ``errors`` lists every problem as `path: what`."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


@dataclass(frozen=True, slots=True)
class WebConfig:
    cert_file: Path | None = None
    key_file: Path | None = None
    min_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2
    users: dict[str, bytes] = field(default_factory=dict)  # name -> bcrypt hash

    @property
    def tls(self) -> bool:
        return self.cert_file is not None

    def ssl_context(self) -> ssl.SSLContext | None:
        if self.cert_file is None or self.key_file is None:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = self.min_version
        ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx

    def secrets(self) -> list[str]:
        """What no log line may show: the users' password hashes."""
        return [hashed.decode("ascii", "replace") for hashed in self.users.values()]

    def authorized(self, header: str | None) -> bool:
        """Whether an Authorization header carries valid credentials (True when auth is off).

        bcrypt's check is slow by design: call this off the event loop.
        """
        if not self.users:
            return True
        creds = _parse_basic(header)
        if creds is None:
            return False
        name, password = creds
        found = None
        for user, hashed in self.users.items():  # compare every name, constant time
            if hmac.compare_digest(user.encode(), name.encode()):
                found = hashed
        ok = bcrypt.checkpw(password.encode(), found if found is not None else _DUMMY_HASH)
        return ok and found is not None


def _parse_basic(header: str | None) -> tuple[str, str] | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    name, sep, password = decoded.partition(":")
    return (name, password) if sep else None


def load_web_config(path: str | Path) -> WebConfig:
    """Read and check a web config; raises :class:`WebConfigError` with every problem."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise WebConfigError([f"{path}: {exc}"]) from exc
    if data is None:
        return WebConfig()
    if not isinstance(data, dict):
        raise WebConfigError(["(top): must be a mapping"])
    errors = [f"{k}: unknown key" for k in data if k not in _TOP]
    kwargs: dict[str, Any] = {}
    kwargs.update(_tls_section(data.get("tls_server_config"), path.parent, errors))
    users = _users_section(data.get("basic_auth_users"), errors)
    if errors:
        raise WebConfigError(errors)
    return WebConfig(users=users, **kwargs)


def _tls_section(tls: Any, base: Path, errors: list[str]) -> dict[str, Any]:
    if tls is None:
        return {}
    if not isinstance(tls, dict):
        errors.append("tls_server_config: must be a mapping")
        return {}
    errors += [f"tls_server_config.{k}: unknown key" for k in tls if k not in _TLS]
    out: dict[str, Any] = {}
    for key in ("cert_file", "key_file"):
        value = tls.get(key)
        if not isinstance(value, str) or not value:
            errors.append(f"tls_server_config.{key}: required (a file path)")
            continue
        p = Path(value) if Path(value).is_absolute() else base / value
        if not p.is_file():
            errors.append(f"tls_server_config.{key}: no such file: {p}")
        out[key] = p
    version = tls.get("min_version", "TLS12")
    if version not in _VERSIONS:
        errors.append(f"tls_server_config.min_version: {version!r} is not one of TLS12, TLS13")
    else:
        out["min_version"] = _VERSIONS[version]
    return out


def _users_section(users: Any, errors: list[str]) -> dict[str, bytes]:
    if users is None:
        return {}
    if not isinstance(users, dict):
        errors.append("basic_auth_users: must be a mapping of user name to bcrypt hash")
        return {}
    out: dict[str, bytes] = {}
    for name, hashed in users.items():
        if not isinstance(hashed, str) or not hashed.startswith(("$2a$", "$2b$", "$2y$")):
            errors.append(f"basic_auth_users.{name}: not a bcrypt hash")
            continue
        out[str(name)] = hashed.encode()
    return out
