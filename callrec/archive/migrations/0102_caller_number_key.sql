-- The form a stored caller number is compared in: its separators (space, '-', '(', ')',
-- '.') and surrounding whitespace dropped, as callrec.privacy.numbers.canonical_number drops
-- them. Caller ID spelled '040-123 4567' is the same number as '0401234567': export,
-- erasure, number holds and search compare this key with the spellings of one number
-- (number_variants), and so find the calls the keyed hash of holds finds. Compared as the
-- stored text before, they missed such calls.
CREATE FUNCTION caller_number_key(raw text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN regexp_replace(btrim(raw, E' \t\n\r\f\v'), '[ ().-]', '', 'g');

CREATE INDEX calls_caller_number_key_idx ON calls (caller_number_key(caller_number), started_at);
