# The tapad server image: compose builds it for the "analyticsserver" service.
# Two stages: install the locked dependencies and tapad into a virtual environment, then copy
# that environment alone into a clean image (no build files, no pip caches).
#
# PYTHON_IMAGE: the base, python:3.11-slim unless .env names a stand-in (deploy/local-images.sh).
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
# The pip index to use instead of PyPI, if this host's pip has one (local-images.sh writes it
# into .env). A build argument of this stage only: it is not kept in the final image.
ARG TAPAD_PIP_INDEX_URL=
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_NO_INPUT=1
RUN python3 -m venv /opt/tapad
# requirements.lock pins every runtime dependency with its hashes (make lock): two builds of
# one commit install the same files, and a file that changed on the index is refused.
COPY requirements.lock /src/
RUN /opt/tapad/bin/pip install ${TAPAD_PIP_INDEX_URL:+--index-url "$TAPAD_PIP_INDEX_URL"} \
        --require-hashes --no-deps --only-binary :all: -r /src/requirements.lock
COPY pyproject.toml README.md LICENSE /src/
COPY tapad /src/tapad
RUN /opt/tapad/bin/pip install ${TAPAD_PIP_INDEX_URL:+--index-url "$TAPAD_PIP_INDEX_URL"} \
        --no-deps /src

FROM ${PYTHON_IMAGE}
RUN useradd --system --create-home --uid 10001 tapad
COPY --from=build /opt/tapad /opt/tapad
ENV PATH=/opt/tapad/bin:$PATH PYTHONUNBUFFERED=1
# Not root: a bug in the server cannot touch the image.
USER tapad
WORKDIR /home/tapad
EXPOSE 8080
# SIGTERM: stop accepting, finish requests in flight, commit what is queued, then exit
# (--shutdown-timeout).
STOPSIGNAL SIGTERM
ENTRYPOINT ["tapad"]
# Listens on 127.0.0.1 unless told otherwise: compose passes --host 0.0.0.0 on purpose.
CMD ["serve"]
