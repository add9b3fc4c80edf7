# refd — IMAP referral front door.
FROM python:3.11-slim

RUN useradd --system --uid 10143 --home-dir /nonexistent --shell /usr/sbin/nologin refd

WORKDIR /src
COPY pyproject.toml README.md ./
COPY refd ./refd
RUN pip install --no-cache-dir . && rm -rf /src

# Mount the daemon config, routing table and passwd-file here.
VOLUME ["/etc/refd"]
USER refd
EXPOSE 143 993 9143
ENTRYPOINT ["refd", "serve"]
CMD ["-c", "/etc/refd/refd.yaml"]
