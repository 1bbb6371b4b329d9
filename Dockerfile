# Simpang worker image: `docker compose up` builds it for the worker service.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY simpang simpang
COPY streams streams
COPY detectors detectors
COPY models models
COPY simulator simulator
COPY dashboards dashboards
RUN pip install --no-cache-dir .
USER nobody
ENV SIMPANG_DATA_DIR=/tmp/simpang
ENTRYPOINT ["simpang"]
CMD ["worker"]
