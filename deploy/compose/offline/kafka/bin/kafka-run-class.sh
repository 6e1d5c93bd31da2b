#!/usr/bin/env bash
# kafka-run-class.sh CLASS ARGS...: as in Kafka's distribution, with its variables
# (KAFKA_HEAP_OPTS, KAFKA_JVM_PERFORMANCE_OPTS, KAFKA_OPTS, KAFKA_LOG4J_OPTS).
set -euo pipefail
read -r -a heap <<<"${KAFKA_HEAP_OPTS:--Xmx256m}"
read -r -a perf <<<"${KAFKA_JVM_PERFORMANCE_OPTS:--XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xshare:auto}"
read -r -a opts <<<"${KAFKA_OPTS:-}"
read -r -a log4j <<<"${KAFKA_LOG4J_OPTS:--Dlog4j.configuration=file:/opt/kafka/bin/tools-log4j.properties}"
exec java "${heap[@]}" "${perf[@]}" "${log4j[@]}" "${opts[@]}" -cp "/opt/kafka/libs/*" "$@"
