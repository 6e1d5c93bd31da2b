#!/usr/bin/env bash
# Creates Mercato's topics (docs/architecture.md, "Topics and events"). Used by the topics Job
# here and by docker-compose.yml's kafka-topics step.
# Dead-letter topics get one partition: low volume, and a total order is easy to read.
set -euo pipefail

BOOTSTRAP="${KAFKA_BOOTSTRAP:-kafka:9092}"
PREFIX="${TOPIC_PREFIX:-}"
REPLICATION="${TOPIC_REPLICATION_FACTOR:-1}"
TOPICS=(
    orders:6 inventory:6 payments:6
    order.dlq:1 inventory.dlq:1 payment.dlq:1 notification.dlq:1
)

for spec in "${TOPICS[@]}"; do
    name="$PREFIX${spec%%:*}"
    partitions="${spec##*:}"
    /opt/kafka/bin/kafka-topics.sh --bootstrap-server "$BOOTSTRAP" --create --if-not-exists \
        --topic "$name" --partitions "$partitions" --replication-factor "$REPLICATION"
done
/opt/kafka/bin/kafka-topics.sh --bootstrap-server "$BOOTSTRAP" --describe | grep -E '^Topic:' || true
