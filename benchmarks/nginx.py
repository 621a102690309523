"""nginx as the farm's origins: the same plan, served by one nginx process.

The Python origins of :mod:`benchmarks.farm` cost the far end about 0.66 of
a core at 500 measurements a second, on a machine whose two cores the
exporters under test also need. nginx serves the same origins for a fraction
of that. Each loopback address of the plan gets one ``server`` block
(``listen ADDRESS:PORT ssl``, the lab CA's certificate for that address's
names) answering every request with the lab's fixed page, ``Connection:
close``. The resolver stays the lab's ``DNSServer`` in the farm process.

Everything nginx writes (pid, error log, temporary files, the lock) goes into
the run's own directory; nothing in ``/etc/nginx`` or ``/var`` is read or
written, so it runs the same as root or not. Run as root, its workers keep
the user that started it (nginx would otherwise switch them to ``nobody``,
which cannot read the run's owner-only directory).
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["NGINX", "WORKERS", "Origin", "argv", "nginx_path", "nginx_version", "write_config"]

NGINX = "/usr/sbin/nginx"
#: Worker processes. One worker is the cheapest per request on this 2-core
#: machine shared with both exporters (``docs/performance.md``, Method).
WORKERS = 1
#: Connections one worker may hold besides its listening sockets.
_SPARE_CONNECTIONS = 4096
#: Backlog of each listening socket (the Python origins use the same).
BACKLOG = 1024


@dataclass(frozen=True, slots=True)
class Origin:
    """One address of the plan: where it listens and the certificate of its names."""

    address: str
    port: int
    cert: Path
    key: Path


def nginx_path() -> str | None:
    """Debian's nginx (``/usr/sbin/nginx``, outside a normal user's PATH), or one on PATH."""
    if os.access(NGINX, os.X_OK):
        return NGINX
    return shutil.which("nginx")


def nginx_version(exe: str) -> str:
    """``nginx/1.22.1`` as ``nginx -v`` says it (on stderr)."""
    done = subprocess.run([exe, "-v"], capture_output=True, text=True, check=False, timeout=10)
    text = (done.stderr or done.stdout).strip()
    return text.split(":", 1)[1].strip() if ":" in text else text


def _quoted(path: Path) -> str:
    text = str(path)
    if any(c in text for c in '"\\;{}$\n'):
        raise ValueError(f"{text!r}: nginx.conf cannot name this path")
    return f'"{text}"'


def write_config(
    directory: Path, origins: Iterable[Origin], page: bytes, *, workers: int = WORKERS
) -> Path:
    """Write ``directory/nginx.conf`` (and the page it serves); return the config's path.

    ``workers`` 0 runs nginx as a single process (``master_process off``);
    otherwise a master and that many workers.
    """
    if workers < 0:
        raise ValueError(f"nginx workers: {workers} is negative (0: one process, no master)")
    origins = list(origins)
    www = directory / "www"
    www.mkdir(parents=True, exist_ok=True)
    (www / "index.html").write_bytes(page)
    temp = directory / "temp"
    temp.mkdir(exist_ok=True)
    lines = [
        "daemon off;",
        f"master_process {'on' if workers else 'off'};",
        f"worker_processes {max(workers, 1)};",
        f"pid {_quoted(directory / 'nginx.pid')};",
        f"lock_file {_quoted(directory / 'nginx.lock')};",
        f"error_log {_quoted(directory / 'error.log')} warn;",
        f"worker_rlimit_nofile {len(origins) + 2 * _SPARE_CONNECTIONS};",
    ]
    if os.geteuid() == 0:  # keep the workers' user: the run's directory is owner-only
        user = pwd.getpwuid(os.geteuid()).pw_name
        group = grp.getgrgid(os.getegid()).gr_name
        lines.append(f"user {user} {group};")
    lines += [
        "events {",
        f"    worker_connections {len(origins) + _SPARE_CONNECTIONS};",
        "}",
        "http {",
        "    access_log off;",
        f"    client_body_temp_path {_quoted(temp / 'body')};",
        f"    proxy_temp_path {_quoted(temp / 'proxy')};",
        f"    fastcgi_temp_path {_quoted(temp / 'fastcgi')};",
        f"    uwsgi_temp_path {_quoted(temp / 'uwsgi')};",
        f"    scgi_temp_path {_quoted(temp / 'scgi')};",
        "    types { }",
        '    default_type "text/html; charset=utf-8";',
        "    keepalive_timeout 0;  # Connection: close, one request per connection",
        "    sendfile on;",
        "    open_file_cache max=16;",
        "    ssl_protocols TLSv1.2 TLSv1.3;",
        f"    root {_quoted(www)};",
    ]
    for o in origins:
        lines += [
            "    server {",
            f"        listen {o.address}:{o.port} ssl backlog={BACKLOG};",
            f"        ssl_certificate {_quoted(o.cert)};",
            f"        ssl_certificate_key {_quoted(o.key)};",
            "        location / { try_files /index.html =404; }",
            "    }",
        ]
    lines.append("}")
    path = directory / "nginx.conf"
    path.write_text("\n".join(lines) + "\n")
    return path


def argv(exe: str, config: Path) -> list[str]:
    """The command line that runs ``config`` in the foreground, logging into its directory."""
    directory = config.parent
    return [exe, "-p", str(directory), "-c", str(config), "-e", str(directory / "error.log")]
