FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY segments segments
COPY stream stream
COPY rules rules
COPY connectors connectors
RUN pip install --no-cache-dir '.[rocksdb]' \
    # The worker's table store (a volume in docker-compose.yml), writable by `nobody`.
    && mkdir -p /data && chown nobody /data
USER nobody
ENTRYPOINT []
