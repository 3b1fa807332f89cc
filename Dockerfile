FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY common common
COPY rules rules
COPY connectors connectors
COPY stream stream
COPY serving serving
COPY segments segments
RUN pip install --no-cache-dir .
USER nobody
ENTRYPOINT []
