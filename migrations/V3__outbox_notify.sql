-- Wake every replica's dispatcher as soon as mail is queued, not at its next poll: each
-- statement that inserts outbox rows sends one notification, delivered when its transaction
-- commits (PostgreSQL LISTEN/NOTIFY; dispatchers keep polling as a fallback).
CREATE FUNCTION registrar_outbox_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('registrar_outbox', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER email_outbox_notify
    AFTER INSERT ON email_outbox
    FOR EACH STATEMENT
    EXECUTE FUNCTION registrar_outbox_notify();
