-- An erasure that meets calls another run has queued already (the daily retention run,
-- interrupted, say) takes them over for its case where they have none, so that the case is
-- closed when they are deleted.
GRANT UPDATE (case_id) ON purge_queue TO callrec_app;
