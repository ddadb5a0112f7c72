#!/bin/sh
# Runs the container's command after one step: `inferline serve up` gives tritonserver a backend directory of its own
# (<workdir>/serving/backends, holding python/ only, which it rebuilds at every start); the gpu target's models also
# need the image's native onnxruntime backend there. Linking it is idempotent and leaves python/ to serve up.
set -eu

workdir="${INFERLINE_WORKDIR:-/var/lib/inferline}"
backends="${workdir}/serving/backends"
mkdir -p "${backends}"
for backend in onnxruntime; do
    if [ -d "/opt/tritonserver/backends/${backend}" ]; then
        ln -sfn "/opt/tritonserver/backends/${backend}" "${backends}/${backend}"
    else
        echo "entrypoint: /opt/tritonserver/backends/${backend} is missing: is this NVIDIA's Triton image?" >&2
        exit 1
    fi
done

exec "$@"
