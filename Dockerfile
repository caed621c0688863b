# The tapad server image: docker compose builds it for the "analyticsserver" service.
# Two stages: build a wheel with the build tools, install it into a slim image without them.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY tapad ./tapad
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --create-home --uid 10001 tapad
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
# Not root: a bug in the server cannot touch the image.
USER tapad
WORKDIR /home/tapad
EXPOSE 8080
# SIGTERM: finish requests in flight, commit what is queued, then exit (--shutdown-timeout).
STOPSIGNAL SIGTERM
ENTRYPOINT ["tapad"]
# Listens on 127.0.0.1 unless told otherwise: compose passes --host 0.0.0.0 on purpose.
CMD ["serve"]
