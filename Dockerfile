# lifeline exporter image: `docker build -t lifeline . && docker run -p 9478:9478 -v $PWD/config.yaml:/etc/lifeline/config.yaml lifeline`
FROM python:3.11-slim

WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY probes ./probes
COPY exporter ./exporter
# The tested, audited versions only (constraints.txt; CI runs pip-audit on it).
RUN pip install --no-cache-dir -c constraints.txt . && rm -rf /src

# Never run as root: the exporter needs no privileges.
RUN useradd --system --uid 10001 --home-dir /var/lib/lifeline --create-home lifeline
USER 10001
WORKDIR /var/lib/lifeline
COPY config.yaml /etc/lifeline/config.yaml

EXPOSE 9478
ENTRYPOINT ["lifeline"]
CMD ["serve", "-c", "/etc/lifeline/config.yaml", "--data-dir", "/var/lib/lifeline/data"]
