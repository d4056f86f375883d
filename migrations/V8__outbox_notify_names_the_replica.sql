-- The replica that queues mail wakes its own dispatcher directly, so the notification only
-- needs to reach the others; yet it woke the sender too, whose dispatcher then claimed a
-- second time and found nothing: under a stream of registrations, one wasted claim each. The
-- notification now names the sender: each replica's sessions carry its id in the setting
-- `registrar.replica` (a connection option), and listeners skip their own. A session without
-- it (an older replica, or a proxy that drops connection options) sends an empty payload,
-- which every listener takes as someone else's, as before.
CREATE OR REPLACE FUNCTION registrar_outbox_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM queued) THEN
        PERFORM pg_notify(
            'registrar_outbox',
            coalesce(current_setting('registrar.replica', true), '')
        );
    END IF;
    RETURN NULL;
END
$$;
