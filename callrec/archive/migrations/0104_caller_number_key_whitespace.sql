-- caller_number_key trimmed the letter 'v', not the vertical tab: PostgreSQL's escape strings
-- have no \v. A caller ID 'v0401234567' was taken for 0401234567 by export, erasure and
-- search, while the keyed hash of holds (callrec.privacy.numbers) did not take it so: a hold
-- on that number did not cover a call its erasure deleted. The same ASCII whitespace as
-- numbers.WHITESPACE now, in both; the index is built again for the new values.
CREATE OR REPLACE FUNCTION caller_number_key(raw text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN regexp_replace(btrim(raw, E' \t\n\r\f\x0b'), '[ ().-]', '', 'g');

REINDEX INDEX calls_caller_number_key_idx;
