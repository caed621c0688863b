# Stand-in for nginx:1.28-alpine from Debian unstable's nginx, for deploy/local-images.sh.
# Debian 12's nginx 1.22 lacks "resolve" in an upstream (needed to balance replicas added or
# removed later); unstable's has it, so deploy/nginx.conf runs here unchanged.
ARG BASE
FROM ${BASE}
# Check-Valid-Until off: the machine's mirror may be a dated snapshot, whose unstable Release
# is past its (one-week) validity; its signature is still checked.
RUN apt-get -o Acquire::Check-Valid-Until=false update \
 && apt-get install -y --no-install-recommends nginx wget \
 && rm -rf /var/lib/apt/lists/* /etc/nginx/sites-enabled/* \
 && ln -sf /dev/stdout /var/log/nginx/access.log \
 && ln -sf /dev/stderr /var/log/nginx/error.log
EXPOSE 80
# As the official image: SIGQUIT lets workers finish the requests they hold.
STOPSIGNAL SIGQUIT
CMD ["nginx", "-g", "daemon off;"]
