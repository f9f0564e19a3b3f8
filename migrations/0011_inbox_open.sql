-- Open orders of a bucket, for the inbox claim: a bucket order waits for every earlier open
-- order of its bucket, found here without reading the bucket's done orders.
CREATE INDEX inbox_bucket_open ON inbox (bucket, state, seq);
