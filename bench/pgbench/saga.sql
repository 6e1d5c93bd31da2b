-- One confirmed order's saga as Postgres sees it: the twelve transactions the services commit,
-- in saga order, with the statements each runs (read from the services' repositories and the
-- shared outbox, inbox and consumer). Run against schema.sql with `pgbench -M prepared`: one
-- script execution is one saga, so pgbench's rate is sagas per second and commits per second
-- is twelve times that. What the database never sees is left out: the calls to the card
-- processor and the SMTP server, Kafka, and the Python around the statements.
\set sku_a random(1, 500)
\set sku_b random(501, 1000)
\set part :client_id % 6

-- 1. order-api, POST /api/v1/orders: idempotency key, order, lines, history, outbox row.
BEGIN;
SELECT gen_random_uuid() AS order_id, gen_random_uuid() AS request_key, 'SKU-' || lpad(:sku_a::int::text, 4, '0') AS sku1, 'SKU-' || lpad(:sku_b::int::text, 4, '0') AS sku2 \gset
SELECT pg_try_advisory_xact_lock(hashtextextended('idempotency-bench-' || :request_key::text, 0));
SELECT customer_id, key, request_hash, order_id, created_at FROM ord.idempotency_keys WHERE customer_id = 'bench' AND key = :request_key::text;
INSERT INTO ord.orders (id, customer_id, email, status, deadline_at) VALUES (:order_id::uuid, 'bench', NULL, 'PENDING', now() + interval '60 seconds') RETURNING created_at, updated_at;
INSERT INTO ord.order_lines (order_id, line_no, sku, quantity) VALUES (:order_id::uuid, 1, :sku1::text, 1), (:order_id::uuid, 2, :sku2::text, 1);
INSERT INTO ord.order_history (order_id, status, step) VALUES (:order_id::uuid, 'PENDING', 'created') RETURNING id, at;
INSERT INTO ord.idempotency_keys (customer_id, key, request_hash, order_id) VALUES ('bench', :request_key::text, md5(:request_key::text), :order_id::uuid) RETURNING created_at;
INSERT INTO ord.outbox (event_id, topic, key, event_type, envelope) VALUES (gen_random_uuid(), 'orders', :order_id::uuid::text, 'order.created', jsonb_build_object('id', gen_random_uuid(), 'type', 'order.created', 'version', 1, 'occurred_at', now(), 'order_id', :order_id::uuid::text, 'payload', jsonb_build_object('customer_id', 'bench', 'email', NULL, 'lines', jsonb_build_array(jsonb_build_object('sku', :sku1::text, 'quantity', 1), jsonb_build_object('sku', :sku2::text, 'quantity', 1))))) RETURNING id AS created_row \gset
SELECT id, order_id, status, step, reason, at FROM ord.order_history WHERE order_id = :order_id::uuid ORDER BY id;
COMMIT;

-- 2. order relay: order.created published, its row deleted.
BEGIN;
SELECT pg_try_advisory_xact_lock(1835365987 + :client_id::int);
SELECT id, topic, key, envelope, headers FROM ord.outbox WHERE id = :created_row::bigint ORDER BY id LIMIT 100;
DELETE FROM ord.outbox WHERE id IN (:created_row::bigint);
COMMIT;

-- 3. inventory consumer, order.created: inbox, claim, lock products, reserve, outbox.
BEGIN;
INSERT INTO inv.inbox (event_id, event_type, order_id, topic, partition, "offset") VALUES (gen_random_uuid(), 'order.created', :order_id::uuid, 'orders', :part::int, :created_row::bigint) ON CONFLICT (event_id) DO NOTHING RETURNING event_id;
INSERT INTO inv.order_outcomes (order_id, state) VALUES (:order_id::uuid, 'RESERVED') ON CONFLICT (order_id) DO NOTHING RETURNING order_id;
SELECT sku, name, unit_price, currency, on_hand, reserved, committed FROM inv.products WHERE sku IN (:sku1::text, :sku2::text) ORDER BY sku FOR UPDATE;
UPDATE inv.products SET reserved = reserved + 1 WHERE sku = :sku1::text;
UPDATE inv.products SET reserved = reserved + 1 WHERE sku = :sku2::text;
INSERT INTO inv.reservations (order_id, sku, quantity, unit_price, status) VALUES (:order_id::uuid, :sku1::text, 1, 1000 + :sku_a::int, 'RESERVED'), (:order_id::uuid, :sku2::text, 1, 1000 + :sku_b::int, 'RESERVED') RETURNING created_at, updated_at;
INSERT INTO inv.outbox (event_id, topic, key, event_type, envelope) VALUES (gen_random_uuid(), 'inventory', :order_id::uuid::text, 'inventory.reserved', jsonb_build_object('id', gen_random_uuid(), 'type', 'inventory.reserved', 'version', 1, 'occurred_at', now(), 'order_id', :order_id::uuid::text, 'payload', jsonb_build_object('customer_id', 'bench', 'amount', 2000 + :sku_a::int + :sku_b::int, 'currency', 'EUR', 'lines', jsonb_build_array(jsonb_build_object('sku', :sku1::text, 'quantity', 1, 'unit_price', 1000 + :sku_a::int), jsonb_build_object('sku', :sku2::text, 'quantity', 1, 'unit_price', 1000 + :sku_b::int))))) RETURNING id AS reserved_row \gset
COMMIT;

-- 4. inventory relay: inventory.reserved published.
BEGIN;
SELECT pg_try_advisory_xact_lock(1835365987 + :client_id::int);
SELECT id, topic, key, envelope, headers FROM inv.outbox WHERE id = :reserved_row::bigint ORDER BY id LIMIT 100;
DELETE FROM inv.outbox WHERE id IN (:reserved_row::bigint);
COMMIT;

-- 5. payment consumer, inventory.reserved: inbox, claim and lock the payment, authorize
--    (the processor is called here, with the row locked), outbox.
BEGIN;
INSERT INTO pay.inbox (event_id, event_type, order_id, topic, partition, "offset") VALUES (gen_random_uuid(), 'inventory.reserved', :order_id::uuid, 'inventory', :part::int, :reserved_row::bigint) ON CONFLICT (event_id) DO NOTHING RETURNING event_id;
INSERT INTO pay.payments (order_id, customer_id, status, amount, currency) VALUES (:order_id::uuid, 'bench', 'AUTHORIZING', 2000 + :sku_a::int + :sku_b::int, 'EUR') ON CONFLICT (order_id) DO NOTHING RETURNING order_id;
SELECT order_id, customer_id, status, amount, captured, refunded, currency, provider_ref, idempotency_key, key_voided, failure_reason, created_at, updated_at FROM pay.payments WHERE order_id = :order_id::uuid FOR UPDATE;
UPDATE pay.payments SET status = 'AUTHORIZED', idempotency_key = 'auth-' || :order_id::uuid::text, provider_ref = 'auth_' || md5(:order_id::uuid::text), updated_at = now() WHERE order_id = :order_id::uuid;
INSERT INTO pay.outbox (event_id, topic, key, event_type, envelope) VALUES (gen_random_uuid(), 'payments', :order_id::uuid::text, 'payment.authorized', jsonb_build_object('id', gen_random_uuid(), 'type', 'payment.authorized', 'version', 1, 'occurred_at', now(), 'order_id', :order_id::uuid::text, 'payload', jsonb_build_object('amount', 2000 + :sku_a::int + :sku_b::int, 'currency', 'EUR', 'authorization_id', 'auth_' || md5(:order_id::uuid::text)))) RETURNING id AS authorized_row \gset
COMMIT;

-- 6. order consumer, inventory.reserved: inbox, lock the order (lines and history load with
--    it), history entry, amount.
BEGIN;
INSERT INTO ord.inbox (event_id, event_type, order_id, topic, partition, "offset") VALUES (gen_random_uuid(), 'inventory.reserved', :order_id::uuid, 'inventory', :part::int, :reserved_row::bigint) ON CONFLICT (event_id) DO NOTHING RETURNING event_id;
SELECT id, customer_id, email, status, cancel_reason, amount, currency, deadline_at, created_at, updated_at FROM ord.orders WHERE id = :order_id::uuid FOR UPDATE;
SELECT order_id, line_no, sku, quantity FROM ord.order_lines WHERE order_id IN (:order_id::uuid) ORDER BY line_no;
SELECT id, order_id, status, step, reason, at FROM ord.order_history WHERE order_id IN (:order_id::uuid) ORDER BY id;
UPDATE ord.orders SET amount = 2000 + :sku_a::int + :sku_b::int, currency = 'EUR', updated_at = now() WHERE id = :order_id::uuid;
INSERT INTO ord.order_history (order_id, status, step) VALUES (:order_id::uuid, 'PENDING', 'reserved') RETURNING id, at;
COMMIT;

-- 7. payment relay: payment.authorized published.
BEGIN;
SELECT pg_try_advisory_xact_lock(1835365987 + :client_id::int);
SELECT id, topic, key, envelope, headers FROM pay.outbox WHERE id = :authorized_row::bigint ORDER BY id LIMIT 100;
DELETE FROM pay.outbox WHERE id IN (:authorized_row::bigint);
COMMIT;

-- 8. order consumer, payment.authorized: inbox, lock the order, CONFIRMED, history, outbox.
BEGIN;
INSERT INTO ord.inbox (event_id, event_type, order_id, topic, partition, "offset") VALUES (gen_random_uuid(), 'payment.authorized', :order_id::uuid, 'payments', :part::int, :authorized_row::bigint) ON CONFLICT (event_id) DO NOTHING RETURNING event_id;
SELECT id, customer_id, email, status, cancel_reason, amount, currency, deadline_at, created_at, updated_at FROM ord.orders WHERE id = :order_id::uuid FOR UPDATE;
SELECT order_id, line_no, sku, quantity FROM ord.order_lines WHERE order_id IN (:order_id::uuid) ORDER BY line_no;
SELECT id, order_id, status, step, reason, at FROM ord.order_history WHERE order_id IN (:order_id::uuid) ORDER BY id;
UPDATE ord.orders SET status = 'CONFIRMED', updated_at = now() WHERE id = :order_id::uuid;
INSERT INTO ord.order_history (order_id, status, step) VALUES (:order_id::uuid, 'CONFIRMED', 'confirmed') RETURNING id, at;
INSERT INTO ord.outbox (event_id, topic, key, event_type, envelope) VALUES (gen_random_uuid(), 'orders', :order_id::uuid::text, 'order.confirmed', jsonb_build_object('id', gen_random_uuid(), 'type', 'order.confirmed', 'version', 1, 'occurred_at', now(), 'order_id', :order_id::uuid::text, 'payload', jsonb_build_object('customer_id', 'bench', 'email', NULL, 'amount', 2000 + :sku_a::int + :sku_b::int, 'currency', 'EUR'))) RETURNING id AS confirmed_row \gset
COMMIT;

-- 9. order relay: order.confirmed published.
BEGIN;
SELECT pg_try_advisory_xact_lock(1835365987 + :client_id::int);
SELECT id, topic, key, envelope, headers FROM ord.outbox WHERE id = :confirmed_row::bigint ORDER BY id LIMIT 100;
DELETE FROM ord.outbox WHERE id IN (:confirmed_row::bigint);
COMMIT;

-- 10. inventory consumer, order.confirmed: inbox, lock the order, its holds and products,
--     move the holds to sold stock.
BEGIN;
INSERT INTO inv.inbox (event_id, event_type, order_id, topic, partition, "offset") VALUES (gen_random_uuid(), 'order.confirmed', :order_id::uuid, 'orders', :part::int, :confirmed_row::bigint) ON CONFLICT (event_id) DO NOTHING RETURNING event_id;
SELECT state FROM inv.order_outcomes WHERE order_id = :order_id::uuid FOR UPDATE;
SELECT order_id, sku, quantity, unit_price, status, created_at, updated_at FROM inv.reservations WHERE order_id = :order_id::uuid AND status = 'RESERVED' ORDER BY sku FOR UPDATE;
SELECT sku, name, unit_price, currency, on_hand, reserved, committed FROM inv.products WHERE sku IN (:sku1::text, :sku2::text) ORDER BY sku FOR UPDATE;
UPDATE inv.products SET reserved = reserved - 1, committed = committed + 1 WHERE sku = :sku1::text;
UPDATE inv.products SET reserved = reserved - 1, committed = committed + 1 WHERE sku = :sku2::text;
UPDATE inv.reservations SET status = 'COMMITTED', updated_at = now() WHERE order_id = :order_id::uuid AND status = 'RESERVED';
UPDATE inv.order_outcomes SET state = 'CONFIRMED', updated_at = now() WHERE order_id = :order_id::uuid;
COMMIT;

-- 11. payment consumer, order.confirmed: inbox, lock the payment, capture.
BEGIN;
INSERT INTO pay.inbox (event_id, event_type, order_id, topic, partition, "offset") VALUES (gen_random_uuid(), 'order.confirmed', :order_id::uuid, 'orders', :part::int, :confirmed_row::bigint) ON CONFLICT (event_id) DO NOTHING RETURNING event_id;
SELECT order_id, customer_id, status, amount, captured, refunded, currency, provider_ref, idempotency_key, key_voided, failure_reason, created_at, updated_at FROM pay.payments WHERE order_id = :order_id::uuid FOR UPDATE;
UPDATE pay.payments SET status = 'CAPTURED', captured = amount, updated_at = now() WHERE order_id = :order_id::uuid;
COMMIT;

-- 12. notification consumer, order.confirmed: inbox, the order's one notification, sent.
BEGIN;
INSERT INTO note.inbox (event_id, event_type, order_id, topic, partition, "offset") VALUES (gen_random_uuid(), 'order.confirmed', :order_id::uuid, 'orders', :part::int, :confirmed_row::bigint) ON CONFLICT (event_id) DO NOTHING RETURNING event_id;
INSERT INTO note.notifications (id, order_id, customer_id, recipient, kind, subject, body, message_id) VALUES (gen_random_uuid(), :order_id::uuid, 'bench', 'bench@example.com', 'order.confirmed', 'Your order is confirmed', repeat('Thank you for your order. ', 12), '<order-' || :order_id::uuid::text || '@mercato.local>') ON CONFLICT (order_id) DO NOTHING RETURNING id AS notification_id \gset
UPDATE note.notifications SET sent_at = now() WHERE id = :notification_id::uuid;
COMMIT;
