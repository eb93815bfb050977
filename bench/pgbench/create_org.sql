-- The SQL of one successful create-organisation request
-- (src/service/organisations.rs), audit row included, replayed by pgbench.
-- Statement for statement what sts sends (bench/run compares the counts with
-- pg_stat_statements); the id is derived from a random number on the server
-- (md5(n)::uuid) so the three statements agree on it, times are now(), and
-- constant strings are literals. Variables: run, admin (set with -D).
\set n random(1, 9223372036854775806)
BEGIN;
-- Is the bearer token's user still active? Read inside the write's own
-- transaction (src/service/audit.rs, audited_write).
SELECT "users"."disabled_at" FROM "users" WHERE ("users"."id" = :admin) LIMIT 1;
-- The unique indexes on id and name decide conflicts in the insert itself.
INSERT INTO "organisations" ("id", "name", "name_key", "roles", "created_at", "last_modified", "deactivated_at") VALUES (md5(:run || '-' || :n)::uuid, 'pgbench-' || :run || '-' || :n, 'pgbench-' || :run || '-' || :n, '["ISSUER"]', now(), now(), NULL);
INSERT INTO "audit_events" ("id", "created_at", "action", "outcome", "subject", "actor", "organisation_id", "target_id", "request_id", "source_ip", "reason") VALUES (gen_random_uuid(), now(), 'organisation.create', 'SUCCESS', '00000000-0000-0000-0000-000000000001', 'admin', md5(:run || '-' || :n)::uuid, md5(:run || '-' || :n)::uuid::text, 'f5b0c4d2-2f0e-4a5e-9c1e-000000000000', '127.0.0.1', NULL);
COMMIT;
