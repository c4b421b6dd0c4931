-- Several purge workers (the daily retention run, an erasure, a rerun after a crash) claim
-- queue rows with SELECT ... FOR UPDATE SKIP LOCKED, which needs UPDATE on some column.
-- No code updates the column; the grant exists only so that rows can be locked.
GRANT UPDATE (queued_at) ON purge_queue TO callrec_app;
