# refd -- the IMAP referral front door, as a container image.
#
#   docker build -t refd .
#   docker run -d --name refd -p 143:143 -p 993:993 -p 9143:9143 \
#       --stop-timeout 30 -v /srv/refd:/etc/refd:ro refd
#
# Configuration: mount the config directory at /etc/refd (read-only is fine).
# It holds refd.yaml (the daemon config, read as /etc/refd/refd.yaml),
# routing.yaml, users.passwd, an optional users.map and the TLS certificate
# and key; paths inside refd.yaml are relative to it. The listeners must bind
# 0.0.0.0 (or ::) to be reachable from outside the container, and refd.yaml
# needs `metrics: {address: 0.0.0.0, port: 9143}`: without a metrics: section
# refd serves no /healthz, and the HEALTHCHECK below marks it unhealthy.
# deploy/kubernetes/configmap.yaml is a complete example.
#
#   reload (routing table, passwd-file, limits, TLS cert):  docker kill -s HUP refd
#   stop: docker stop -- SIGTERM; refd drains within shutdown_grace_s (10 s by
#         default), hence --stop-timeout 30 (Docker's default is 10 s).
#
# The process runs as uid 10143, never root. Binding 143 and 993 as non-root
# works under Docker (>= 20.10 sets net.ipv4.ip_unprivileged_port_start=0 in
# the container's network namespace), but not with --network host; there, and
# on Kubernetes, listen on 1143/1993 and map the ports
# (deploy/kubernetes/ does exactly that).

# Build stage: install refd and its dependencies into a virtualenv that the
# runtime stage copies whole, so the source tree never reaches the image.
FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY . .
RUN python -m venv /opt/refd \
    && /opt/refd/bin/pip install --no-cache-dir .

FROM python:3.11-slim-bookworm
ENV PATH=/opt/refd/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10143 refd \
    && useradd --system --uid 10143 --gid refd --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin refd
COPY --from=build /opt/refd /opt/refd
# Numeric, so that Kubernetes' runAsNonRoot can verify it without /etc/passwd.
USER 10143:10143
EXPOSE 143 993 9143
# Liveness of the process (slim images have no curl): /healthz answers 200
# while refd runs; urlopen raises, and python exits 1, on anything else.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9143/healthz', timeout=4)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["refd", "serve"]
CMD ["-c", "/etc/refd/refd.yaml"]
