FROM python:3.11-slim
WORKDIR /app
# Dependencies first, from the hashed lock (a layer that changes only with the lock),
# then the project with nothing more resolved.
COPY requirements.lock ./
RUN pip install --no-cache-dir --require-hashes -r requirements.lock
COPY pyproject.toml README.md ./
COPY common common
COPY rules rules
COPY connectors connectors
COPY stream stream
COPY serving serving
COPY segments segments
RUN pip install --no-cache-dir --no-deps --no-build-isolation .
# Only the webhook port faces the internet; 8081 and 8082 are internal.
EXPOSE 8080
USER nobody
ENTRYPOINT []
