# The project image for search and worker containers (and the MLflow / dashboard servers).
# It installs the project exactly as the README says: `make install` (.venv, pip install -e '.[test]').
# PYTHON_IMAGE is the official image unless given: docker/local/images.sh builds a stand-in from
# Debian's packages for machines that reach no image registry.
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}
RUN apt-get update && apt-get install -y --no-install-recommends make && rm -rf /var/lib/apt/lists/*
WORKDIR /app
# The dependencies first, in their own layer, from pyproject.toml alone (with empty stand-ins for
# the files it names): a change to the code or the README does not reinstall them.
COPY pyproject.toml Makefile ./
RUN for package in search search/command_line search/datasets search/results search/trials spaces storage; \
    do mkdir -p $package && touch $package/__init__.py; done && touch README.md && make install
COPY . .
ENV PATH=/app/.venv/bin:$PATH
