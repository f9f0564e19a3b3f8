-- The SHA-256 of each fixed-size block of an object's current version, recorded in the same
-- pass as the whole-object hash (hex, 64 characters a block). Range reads are checked against
-- the blocks they touch. A row whose hash is not the object's is stale and ignored; objects
-- written before this migration have no row and fall back to unverified ranges.
CREATE TABLE object_blocks (
    bucket      TEXT NOT NULL,
    name        TEXT NOT NULL,
    hash        TEXT NOT NULL,
    block_size  BIGINT NOT NULL,
    digests     TEXT NOT NULL,
    PRIMARY KEY (bucket, name)
);
