"""`mercato dlq list|replay` against real Kafka."""

import uuid

from aiokafka import AIOKafkaProducer

from mercato_ops.dlq import dlq_topics, list_letters, replay
from mercato_shared.events import Envelope, OrderCreated
from tests.infra import KAFKA
from tests.kafka_tools import ensure_topics, read_topic


async def test_list_then_replay_each_letter_once(kafka_prefix):
    await ensure_topics(KAFKA, dlq_topics(kafka_prefix), partitions=1)
    producer = AIOKafkaProducer(bootstrap_servers=KAFKA)
    await producer.start()
    event = Envelope.wrap(OrderCreated(customer_id="c", lines=[]), order_id=uuid.uuid4())
    try:
        for value in (event.model_dump_json().encode(), b"{garbage"):
            await producer.send_and_wait(
                f"{kafka_prefix}inventory.dlq",
                value=value,
                key=str(event.order_id).encode(),
                headers=[
                    ("error", b"ValueError: boom"),
                    ("original_topic", f"{kafka_prefix}orders".encode()),
                    ("original_partition", b"0"),
                    ("original_offset", b"7"),
                ],
            )
    finally:
        await producer.stop()

    letters = await list_letters(KAFKA, kafka_prefix)
    assert len(letters) == 2
    assert "order.created" in letters[0].summary
    assert "boom" in letters[1].summary

    replayed = await replay(KAFKA, kafka_prefix)
    assert [letter.offset for letter in replayed] == [0, 1]
    back = await read_topic(f"{kafka_prefix}orders", 2)
    assert sorted(r.value for r in back) == sorted(letter.value for letter in letters)
    assert await replay(KAFKA, kafka_prefix) == []
    assert len(await list_letters(KAFKA, kafka_prefix)) == 2
