#!/usr/bin/env bash
# Stand-ins for compose.yaml's base images, made from Debian packages only, for a machine that
# cannot reach Docker Hub:
#
#   cp .env.example .env && bash deploy/local-images.sh
#   docker-compose up --build -d
#
# debootstrap makes a minimal Debian root from the apt sources this machine already uses,
# `docker import` turns it into a base image, and `docker build` adds the packages each
# stand-in needs (deploy/local-images/*.Dockerfile). The names of the images built are written
# into .env (PYTHON_IMAGE, REDIS_IMAGE, NGINX_IMAGE, PROMETHEUS_IMAGE), which compose.yaml
# reads; without them it uses the official images.
#
# Images are tagged with a hash of what they are made from, so a second run reuses them in a
# few seconds and a changed Dockerfile or CA certificate makes a new one. --rebuild starts over
# (and removes the stand-ins it replaces);
# --env-file FILE writes the names there instead of .env; --print-mirror only prints the Debian
# mirror it would use (read from $TAPAD_APT_ETC, default /etc/apt).
# Needs root (debootstrap), debootstrap and a running Docker daemon.
set -euo pipefail
shopt -s inherit_errexit  # a failed build inside $(...) stops the script too
cd "$(dirname "$0")/.."

rebuild=0
print_mirror=0
env_file=.env
while [ $# -gt 0 ]; do
  case "$1" in
    --rebuild) rebuild=1 ;;
    --print-mirror) print_mirror=1 ;;
    --env-file) env_file="${2:?--env-file needs a file}"; shift ;;
    *) echo "usage: bash deploy/local-images.sh [--rebuild] [--env-file FILE] [--print-mirror]" >&2; exit 2 ;;
  esac
  shift
done

die() { echo "error: $*" >&2; exit 1; }

# The Debian mirror this machine's apt already uses: the first source of a release suite
# (not -security or -updates), from deb822 .sources files or one-line .list files.
# TAPAD_DEBIAN_MIRROR overrides it.
debian_mirror() {
  local files=() f etc="${TAPAD_APT_ETC:-/etc/apt}"
  for f in "$etc/sources.list" "$etc"/sources.list.d/*.list "$etc"/sources.list.d/*.sources; do
    [ -f "$f" ] && files+=("$f")
  done
  [ ${#files[@]} -gt 0 ] || return 0
  awk '
    function flush() {
      if (done) return
      if (uris != "" && suites ~ /(^| )[a-z]+( |$)/ && comps ~ /main/ && uris ~ /debian/ && uris !~ /security/) {
        split(uris, u, " "); print u[1]; done = 1
      }
      uris = ""; suites = ""; comps = ""
    }
    FNR == 1 { flush() }
    done { next }
    FILENAME ~ /\.sources$/ {
      if ($0 ~ /^[ \t]*$/) { flush(); next }
      if ($1 == "URIs:") { $1 = ""; uris = $0; sub(/^ +/, "", uris) }
      if ($1 == "Suites:") { $1 = ""; suites = $0 }
      if ($1 == "Components:") { $1 = ""; comps = $0 }
      next
    }
    $1 == "deb" {
      i = 2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
      if ($(i + 1) ~ /^[a-z]+$/ && $0 ~ / main/ && $i ~ /debian/ && $i !~ /security/) { print $i; done = 1 }
    }
    END { flush() }
  ' "${files[@]}"
}
mirror="${TAPAD_DEBIAN_MIRROR:-$(debian_mirror)}"
[ -n "$mirror" ] || die "no Debian mirror in ${TAPAD_APT_ETC:-/etc/apt}/sources.list*; set TAPAD_DEBIAN_MIRROR"
if [ "$print_mirror" -eq 1 ]; then echo "$mirror"; exit 0; fi

[ "$(id -u)" -eq 0 ] || die "run as root: debootstrap needs it (sudo bash deploy/local-images.sh)"
command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] \
  || die "debootstrap is missing (apt-get install -y debootstrap)"
docker info >/dev/null 2>&1 || die "no Docker daemon answers (start dockerd first)"
export PATH="$PATH:/usr/sbin:/sbin"

have_image() { [ "$rebuild" -eq 0 ] && docker image inspect "$1" >/dev/null 2>&1; }

# A minimal Debian root of one suite as a Docker image: tapad-local/debian:<suite>.
base_image() {
  local suite="$1" image="tapad-local/debian:$1" root began=$SECONDS
  if have_image "$image"; then echo "reusing $image" >&2; return; fi
  root="$(mktemp -d)"
  echo "debootstrap $suite (about a minute)" >&2
  if ! debootstrap --variant=minbase "$suite" "$root" "$mirror" >"$root.log" 2>&1; then
    tail -20 "$root.log" >&2; rm -rf "$root" "$root.log"; die "debootstrap $suite failed"
  fi
  # As Debian's own container images: services never start during `apt-get install`,
  # no apt caches or documentation kept.
  printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
  chmod +x "$root/usr/sbin/policy-rc.d"
  cat >"$root/etc/apt/apt.conf.d/90tapad-local" <<'EOF'
APT::Install-Recommends "false";
Acquire::Languages "none";
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb || true"; };
EOF
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -c . | docker import \
    --change 'ENV DEBIAN_FRONTEND=noninteractive PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' - "$image" >/dev/null
  rm -rf "$root" "$root.log"
  echo "built $image in $((SECONDS - began)) s" >&2
}

# One stand-in: deploy/local-images/<name>.Dockerfile on a base, tagged by the hash of its
# inputs (the Dockerfile, the base image's id and the build context).
standin() {
  local name="$1" base="$2" context="$3" hash image began=$SECONDS
  hash="$( { cat "deploy/local-images/$name.Dockerfile"; docker image inspect -f '{{.Id}}' "$base";
             (cd "$context" && find . -type f | LC_ALL=C sort | xargs -r cat); } \
           | sha256sum | cut -c1-12)"
  image="tapad-local/$name:$hash"
  if have_image "$image"; then echo "reusing $image" >&2; echo "$image"; return; fi
  echo "building $image" >&2
  if ! docker build --force-rm --build-arg "BASE=$base" -t "$image" \
      -f "deploy/local-images/$name.Dockerfile" "$context" >"$work/$name.log" 2>&1; then
    tail -30 "$work/$name.log" >&2
    die "building the $name stand-in failed"
  fi
  echo "built $image in $((SECONDS - began)) s" >&2
  echo "$image"
}

start=$SECONDS
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# Everything below runs side by side where it can: each step mostly waits on the network.
base_image bookworm & bookworm=$!
base_image sid & sid=$!  # nginx with "resolve" in an upstream: 1.27.3 or later
wait "$bookworm" || die "no bookworm base image"
wait "$sid" || die "no sid base image"

# The extra CA certificates this host trusts (update-ca-certificates' local folder).
mkdir -p "$work/empty" "$work/certs/ca-certificates"
if [ -d /usr/local/share/ca-certificates ]; then
  find /usr/local/share/ca-certificates -name '*.crt' -type f \
    -exec cp {} "$work/certs/ca-certificates/" \;
fi

pids=()
standin python tapad-local/debian:bookworm "$work/certs" >"$work/python.image" & pids+=($!)
standin redis tapad-local/debian:bookworm "$work/empty" >"$work/redis.image" & pids+=($!)
standin nginx tapad-local/debian:sid "$work/empty" >"$work/nginx.image" & pids+=($!)
standin prometheus tapad-local/debian:bookworm "$work/empty" >"$work/prometheus.image" & pids+=($!)
for pid in "${pids[@]}"; do wait "$pid" || die "a stand-in image failed to build (above)"; done
python_image="$(cat "$work/python.image")"
redis_image="$(cat "$work/redis.image")"
nginx_image="$(cat "$work/nginx.image")"
prometheus_image="$(cat "$work/prometheus.image")"

# Write the names into the env file (made from .env.example if there is none yet), replacing
# any earlier ones and keeping every other line.
if [ ! -f "$env_file" ]; then
  cp .env.example "$env_file"
  echo "made $env_file from .env.example: set REDIS_PASSWORD in it" >&2
fi
set_env() {
  local key="$1" value="$2"
  if grep -q "^$key=" "$env_file"; then
    sed -i "s|^$key=.*|$key=$value|" "$env_file"
  else
    printf '%s=%s\n' "$key" "$value" >>"$env_file"
  fi
}
set_env PYTHON_IMAGE "$python_image"
set_env REDIS_IMAGE "$redis_image"
set_env NGINX_IMAGE "$nginx_image"
set_env PROMETHEUS_IMAGE "$prometheus_image"
# pip inside `docker build` uses the index this host's pip is configured with, if any
# (http(s) only: a file:// index on the host means nothing inside the build).
index="${PIP_INDEX_URL:-$(python3 -m pip config get global.index-url 2>/dev/null || true)}"
case "$index" in http://* | https://*) set_env TAPAD_PIP_INDEX_URL "$index" ;; esac

# --rebuild: the stand-ins just made replace the earlier ones (which .env files written before
# may still name: run this script again for those).
if [ "$rebuild" -eq 1 ]; then
  for image in "$python_image" "$redis_image" "$nginx_image" "$prometheus_image"; do
    docker images --format '{{.Repository}}:{{.Tag}}' "${image%%:*}" | grep -vxF "$image" \
      | xargs -r docker image rm >/dev/null 2>&1 || true
  done
fi

echo "stand-in images ready in $((SECONDS - start)) s, written to $env_file:" >&2
grep -E '^(PYTHON|REDIS|NGINX|PROMETHEUS)_IMAGE=' "$env_file" >&2
