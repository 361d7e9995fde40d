-- Orders from a JSON-lines file, filtered and reshaped into another JSON-lines directory.
-- Bad lines go to a dead letter file instead of stopping the job.
CREATE TABLE orders (
    order_id BIGINT,
    customer ROW<id BIGINT, name STRING, country STRING>,
    amount DECIMAL(10, 2),
    created_at TIMESTAMP(3)
) WITH (
    'connector' = 'filesystem',
    'path' = 'examples/data/orders.jsonl',
    'format' = 'json',
    'errors' = 'dlq',
    'dlq.path' = 'sluice-data/orders_filter/dead-letters.jsonl'
);

CREATE TABLE big_orders (
    order_id BIGINT,
    customer_name STRING,
    country STRING,
    amount DECIMAL(10, 2),
    order_day STRING
) WITH (
    'connector' = 'filesystem',
    'path' = 'sluice-data/orders_filter/out',
    'format' = 'json'
);

INSERT INTO big_orders
SELECT order_id, customer.name, UPPER(customer.country), amount, DATE_FORMAT(created_at, 'yyyy-MM-dd')
FROM orders
WHERE amount >= 100;
