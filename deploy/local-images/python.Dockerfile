# Stand-in for python:3.11-slim from Debian 12's python3 (3.11), for deploy/local-images.sh.
# The tapad Dockerfile needs: python3 with venv, useradd, and pip able to reach its index.
ARG BASE
FROM ${BASE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && ln -s /usr/bin/python3 /usr/local/bin/python
# The CA certificates this host trusts beyond Debian's (a local HTTPS proxy, say): pip in
# `docker build` goes through the same network. Empty on a host without any.
COPY ca-certificates/ /usr/local/share/ca-certificates/
RUN update-ca-certificates
ENV LANG=C.UTF-8 \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
CMD ["python3"]
