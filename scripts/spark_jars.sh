#!/usr/bin/env bash
# The s3a connector for Feast's Spark store (params/spark.yaml), from a package registry:
# hadoop-aws 3.3.1 and the AWS SDK v1 bundle it was built against (1.11.901) ship inside
# the PyPI source package sagemaker-pyspark 1.4.5 (deps/jars/, Apache-2.0). Puts them in
# .venv/spark-jars/. Usage: scripts/spark_jars.sh [venv-dir]
set -euo pipefail
venv="${1:-.venv}"
dest="$venv/spark-jars"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$venv/bin/pip" download --no-deps --no-binary :all: "sagemaker-pyspark==1.4.5" -d "$tmp" >/dev/null
mkdir -p "$dest"
tar -xzf "$tmp"/sagemaker_pyspark-1.4.5.tar.gz -C "$tmp" \
  sagemaker_pyspark-1.4.5/deps/jars/hadoop-aws-3.3.1.jar \
  sagemaker_pyspark-1.4.5/deps/jars/aws-java-sdk-bundle-1.11.901.jar
mv "$tmp"/sagemaker_pyspark-1.4.5/deps/jars/*.jar "$dest/"
ls "$dest"
