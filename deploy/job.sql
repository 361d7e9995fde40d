-- bid-stats: revenue and bid count per auction in 10-second windows.
-- Start the same script on several machines (`sluice run job.sql --scale-out`,
-- or keep the 'execution.mode' line below): the processes share the job's
-- tasks (one per partition of `bids`) through the consumer group
-- `sluice-bid-stats`, and checkpoint each task to the shared directory below.
SET 'pipeline.name' = 'bid-stats';
SET 'execution.mode' = 'scale-out';
SET 'execution.checkpointing.interval' = '5s';
SET 'execution.checkpointing.dir' = 's3://sluice-checkpoints/bid-stats';
CREATE TABLE bids (auction BIGINT, bidder BIGINT, price BIGINT, ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '2' SECOND)
WITH ('connector' = 'kafka', 'topic' = 'bids', 'properties.bootstrap.servers' = 'kafka-0.kafka:9092,kafka-1.kafka:9092',
      'format' = 'json', 'scan.startup.mode' = 'earliest-offset');
CREATE TABLE bid_stats (auction BIGINT, window_start TIMESTAMP(3), window_end TIMESTAMP(3), bids BIGINT, revenue BIGINT)
WITH ('connector' = 'kafka', 'topic' = 'bid-stats', 'properties.bootstrap.servers' = 'kafka-0.kafka:9092,kafka-1.kafka:9092', 'format' = 'json',
      'sink.delivery-guarantee' = 'exactly-once', 'sink.transactional-id-prefix' = 'bid-stats');
INSERT INTO bid_stats SELECT auction, window_start, window_end, COUNT(*), SUM(price)
FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '10' SECOND)) GROUP BY auction, window_start, window_end;
