# lifeline exporter image, `serve` with a mounted config and its data in a named volume:
#   docker build -t lifeline .
#   docker run -d -p 9478:9478 -v $PWD/config.yaml:/etc/lifeline/config.yaml:ro \
#     -v lifeline-data:/var/lib/lifeline/data lifeline
#
# The base is pinned to a Python minor version and a Debian release. The tag still moves
# with security updates; for a reproducible build append the digest you have verified:
#   docker buildx imagetools inspect python:3.11-slim-bookworm   # FROM ...@sha256:<digest>
FROM python:3.11-slim-bookworm

WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY probes ./probes
COPY exporter ./exporter
# The tested, audited versions only (constraints.txt; CI runs pip-audit on it).
RUN pip install --no-cache-dir -c constraints.txt . && rm -rf /src

# Never run as root: the exporter needs no privileges. The data directory exists, owned
# by that user, before it is declared a volume, so a new named volume starts writable.
RUN useradd --system --uid 10001 --home-dir /var/lib/lifeline --create-home lifeline \
    && install -d -o lifeline /var/lib/lifeline/data
USER 10001
WORKDIR /var/lib/lifeline
COPY config.yaml /etc/lifeline/config.yaml
# The SQLite store and the probe logs: verdict history survives a recreated container.
VOLUME /var/lib/lifeline/data

EXPOSE 9478
# Liveness from inside the container (the slim image has no curl). With --web-config
# (TLS, basic auth) /-/healthy needs them too: override this with a matching check.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:9478/-/healthy', timeout=4)"]
ENTRYPOINT ["lifeline"]
CMD ["serve", "-c", "/etc/lifeline/config.yaml", "--data-dir", "/var/lib/lifeline/data"]
