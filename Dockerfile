# The project image for search and worker containers (and the MLflow / dashboard servers).
# It installs the project exactly as the README says: `make install` (.venv, pip install -e '.[test]').
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends make && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY . .
RUN make install
ENV PATH=/app/.venv/bin:$PATH
