#!/usr/bin/env bash
# Installs Debian's redis-server package when no redis-server is on PATH. The Redis limiter tests
# (`deno task test:redis`) and bench/redis_bench.ts start their own servers on 127.0.0.1 and need
# only the binary. Installing needs root and apt-get.
set -euo pipefail

if command -v redis-server >/dev/null; then
  redis-server --version
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "redis-server is missing, and installing it needs root: run 'apt-get install redis-server' as root" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y redis-server
redis-server --version
