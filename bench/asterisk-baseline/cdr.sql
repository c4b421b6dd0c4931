-- The table cdr_pgsql writes (its documented column set).
CREATE TABLE IF NOT EXISTS cdr (
    calldate    timestamptz NOT NULL DEFAULT now(),
    clid        text NOT NULL DEFAULT '',
    src         text NOT NULL DEFAULT '',
    dst         text NOT NULL DEFAULT '',
    dcontext    text NOT NULL DEFAULT '',
    channel     text NOT NULL DEFAULT '',
    dstchannel  text NOT NULL DEFAULT '',
    lastapp     text NOT NULL DEFAULT '',
    lastdata    text NOT NULL DEFAULT '',
    duration    bigint NOT NULL DEFAULT 0,
    billsec     bigint NOT NULL DEFAULT 0,
    disposition text NOT NULL DEFAULT '',
    amaflags    bigint NOT NULL DEFAULT 0,
    accountcode text NOT NULL DEFAULT '',
    uniqueid    text NOT NULL DEFAULT '',
    userfield   text NOT NULL DEFAULT '',
    peeraccount text NOT NULL DEFAULT '',
    linkedid    text NOT NULL DEFAULT '',
    sequence    bigint NOT NULL DEFAULT 0
);
