-- Reads JSON lines from standard input and prints matching rows with Flink's row kinds.
--   printf '{"user":"ann","clicks":3}\n{"user":"bob","clicks":0}\n' | sluice run examples/stdin_print.sql
CREATE TABLE events (
    `user` STRING,
    clicks INT
) WITH (
    'connector' = 'stdin',
    'format' = 'json',
    'errors' = 'skip'
);

CREATE TABLE console (
    `user` STRING,
    clicks INT,
    active BOOLEAN
) WITH (
    'connector' = 'print',
    'print-identifier' = 'clicks'
);

INSERT INTO console SELECT `user`, clicks, clicks > 0 FROM events;
