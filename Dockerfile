FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY segments segments
COPY stream stream
COPY rules rules
COPY connectors connectors
RUN pip install --no-cache-dir .
USER nobody
ENTRYPOINT []
