#!/usr/bin/env bash
# Toolchains the local stack is built with: Java 17+ and Maven (Kafka from Maven Central jars),
# Go >= 1.24 (MinIO and our FerretDB program from the Go module proxy), Python 3.11.
# Installs what is missing from Debian's packages when run as root; otherwise says what to do.
set -euo pipefail

missing=()
command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || missing+=(maven)
command -v python3.11 >/dev/null || missing+=(python3.11 python3.11-venv)
command -v npm >/dev/null || missing+=(npm)  # OpenSeadragon for the viewer comes from npm
# The catalog's PostgreSQL backend (the default; SLIDESTREAM_MONGO__BACKEND=sqlite needs none)
# runs Debian's PostgreSQL.
if [[ ${SLIDESTREAM_MONGO__BACKEND:-postgresql} == postgresql ]] && ! command -v initdb >/dev/null \
    && ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  missing+=(postgresql-15)
fi

if ((${#missing[@]})); then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    echo "installing from Debian: ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "missing tools, install them first: ${missing[*]}" >&2
    exit 1
  fi
fi

java_major=$(java -XshowSettings:properties -version 2>&1 | awk -F'= ' '/java.specification.version/ {print $2}')
if ((java_major < 17)); then
  echo "Kafka 4 needs Java 17 or newer; found Java $java_major" >&2
  exit 1
fi

if ! command -v go >/dev/null; then
  echo "Go >= 1.24 is needed to build MinIO and FerretDB (Debian's golang package is too old)." >&2
  exit 1
fi
go_minor=$(go env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')
if ((go_minor < 21)); then
  echo "Go $(go env GOVERSION) is too old: need 1.21+ (it fetches the 1.24 toolchain itself)" >&2
  exit 1
fi
