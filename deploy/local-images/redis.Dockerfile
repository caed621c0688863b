# Stand-in for redis:7.4-alpine from Debian's redis-server, for deploy/local-images.sh.
# Like the official image: data in /data (owned by the redis user), redis-server as the command.
ARG BASE
FROM ${BASE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir /data && chown redis:redis /data
WORKDIR /data
EXPOSE 6379
CMD ["redis-server"]
