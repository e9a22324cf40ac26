#!/usr/bin/env bash
# Installs the real servers and tools the tests use (redis-server, ZooKeeper, PostgreSQL,
# PgBouncer, etcd, podman, debootstrap) when they are missing.
# Tests never skip for a missing server: they fail loudly, so install them here first.
set -euo pipefail
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
[ -x /usr/share/zookeeper/bin/zkServer.sh ] || need+=(zookeeper)
command -v java >/dev/null 2>&1 || need+=(default-jre-headless)
# PostgreSQL (Debian's default major version) and PgBouncer: tests/harness runs its own
# throw-away clusters from /usr/lib/postgresql/*/bin and pgbouncer on free loopback ports.
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] || need+=(pgbouncer)
# etcd (tests/harness/etcd_server.py runs /usr/bin/etcd members on free loopback ports).
[ -x /usr/bin/etcd ] && [ -x /usr/bin/etcdctl ] || need+=(etcd-server etcd-client)
# The chaos suite's clock faults: libfaketime, and gcc for its small sem_clockwait shim.
ls /usr/lib/*/faketime/libfaketime.so.1 >/dev/null 2>&1 || need+=(faketime)
command -v gcc >/dev/null 2>&1 || need+=(gcc libc6-dev)
# The image tests (tests/deploy/test_image.py): podman builds the Dockerfile, debootstrap
# makes the local Debian base it builds on (no registry of base images is reachable).
command -v podman >/dev/null 2>&1 || need+=(podman)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
# The status page's browser test (tests/integrations/test_status_page.py): headless
# Chromium driven by selenium through Debian's chromedriver.
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
[ ${#need[@]} -eq 0 ] && exit 0
echo "installing test servers: ${need[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# The Debian packages start system services; tests run their own servers on free ports.
for svc in redis-server zookeeper postgresql pgbouncer etcd; do
  $sudo systemctl disable --now "$svc" >/dev/null 2>&1 || $sudo service "$svc" stop >/dev/null 2>&1 || true
done
# Without systemd, the postgresql package's "main" cluster is started by pg_ctlcluster: stop
# every such cluster so none holds a port (the tests never use them).
if command -v pg_lsclusters >/dev/null 2>&1; then
  pg_lsclusters --no-header 2>/dev/null | while read -r version cluster _; do
    $sudo pg_ctlcluster "$version" "$cluster" stop >/dev/null 2>&1 || true
  done
fi
