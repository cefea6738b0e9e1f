# Sourced by pgherd's container scripts (deploy/container/build, deploy/compose/test): podman
# with the settings in deploy/container/containers.conf, and the names the scripts share.
# shellcheck shell=bash
PGHERD_CONTAINER_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$PGHERD_CONTAINER_DIR/containers.conf}"
# The Debian base made from Debian's packages (build-base), and the images built on it.
PGHERD_BASE_IMAGE="${PGHERD_BASE_IMAGE:-localhost/pgherd-bookworm-base:latest}"
PGHERD_IMAGE="${PGHERD_IMAGE:-localhost/pgherd:latest}"
PGHERD_ETCD_IMAGE="${PGHERD_ETCD_IMAGE:-localhost/pgherd-etcd:latest}"
PGHERD_ZOOKEEPER_IMAGE="${PGHERD_ZOOKEEPER_IMAGE:-localhost/pgherd-zookeeper:latest}"
