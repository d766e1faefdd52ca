-- A payload field read beside a \u0000 escape elsewhere in the payload. PostgreSQL refuses to
-- turn any JSON text holding that escape into text, whichever field is asked for: V2's
-- function read every field of such a payload as NULL, so a failure whose metadata carried a
-- NUL (a raw log line) lost its task and severity in `failures` (and a success signal for its
-- task did not recover it, as it does on SQLite). The escapes are now dropped before the
-- field is read; only a field that cannot be read that way (the escape sits inside it) is
-- NULL.
CREATE OR REPLACE FUNCTION healstore_payload_text(payload TEXT, field TEXT) RETURNS TEXT
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    v TEXT;
BEGIN
    IF strpos(payload, '\u0000') = 0 THEN
        RETURN payload::json ->> field;
    END IF;
    BEGIN
        v := replace(payload, '\u0000', '')::json ->> field;
    EXCEPTION WHEN invalid_text_representation OR untranslatable_character THEN
        v := NULL;
    END;
    RETURN v;
END;
$$;
