-- The outbox trigger notified once per statement that could insert outbox rows, even when it
-- inserted none: every activation and password re-hash woke every replica's dispatcher for a
-- claim that found nothing. It now notifies only when the statement inserted a row (the
-- statement's transition table holds what it inserted).
CREATE OR REPLACE FUNCTION registrar_outbox_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM queued) THEN
        PERFORM pg_notify('registrar_outbox', '');
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER email_outbox_notify ON email_outbox;

CREATE TRIGGER email_outbox_notify
    AFTER INSERT ON email_outbox
    REFERENCING NEW TABLE AS queued
    FOR EACH STATEMENT
    EXECUTE FUNCTION registrar_outbox_notify();
