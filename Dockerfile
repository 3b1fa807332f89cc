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
# Only the webhook port faces the internet; 8081 and 8082 are internal.
EXPOSE 8080
USER nobody
ENTRYPOINT []
