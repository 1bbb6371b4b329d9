#!/bin/bash
# Runs once, after the influxdb image's initial setup (docker-entrypoint-initdb.d): maps the
# InfluxQL database/retention policy "<bucket>/autogen" to the bucket, so Grafana's InfluxQL
# datasource (and `simpang` tests and benchmarks) read it through /query.
set -euo pipefail
bucket="${DOCKER_INFLUXDB_INIT_BUCKET}"
bucket_id="${DOCKER_INFLUXDB_INIT_BUCKET_ID:-$(influx bucket list --name "$bucket" --hide-headers | cut -f1)}"
if influx v1 dbrp list --db "$bucket" --hide-headers | grep -q .; then
    echo "DBRP mapping for $bucket exists"
    exit 0
fi
influx v1 dbrp create --db "$bucket" --rp autogen --bucket-id "$bucket_id" --default
