-- Mail is sent by the replica that queued it: its use case wakes its own dispatcher in-process.
-- The notification (V3, V7, V8) only woke the other replicas, each for a claim that found the
-- message taken, and cost every registration a trigger, a NOTIFY at commit and a listening
-- session per replica (which transaction poolers cannot keep, and some PostgreSQL-compatible
-- databases do not have). Mail a replica did not send itself (it died first, or the send is
-- due for a retry) is found by every dispatcher's poll, as before.
DROP TRIGGER IF EXISTS email_outbox_notify ON email_outbox;
DROP FUNCTION IF EXISTS registrar_outbox_notify();
