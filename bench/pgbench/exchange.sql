-- The SQL of one successful token exchange without an actor, an
-- organisation switch (src/service/grants/exchange.rs), replayed by pgbench.
-- Statement for statement what sts sends (bench/run compares the counts with
-- pg_stat_statements); the subject token is verified in memory (signature,
-- claims) and sends nothing. The service makes ids and times itself, here
-- the server does (gen_random_uuid(), now()), and constant strings are
-- literals. Variables: user (the subject), source (the subject token's
-- organisation), org (the target organisation), set with -D.
BEGIN;
-- grants::organisation_active -> organisations::find: the subject token's
-- organisation must still be active.
SELECT "organisations"."id", "organisations"."name", "organisations"."name_key", "organisations"."roles", "organisations"."created_at", "organisations"."last_modified", "organisations"."deactivated_at" FROM "organisations" WHERE ("organisations"."id" = :source) LIMIT 1;
-- grants::authorise(subject, target organisation) ->
-- memberships::member_for_grant: user, membership and organisation in one
-- query, share-locked.
SELECT "users"."id", "users"."username", "users"."username_key", "users"."kind", "users"."password_hash", "users"."secret_digest", "users"."system_roles", "users"."created_at", "users"."last_modified", "users"."disabled_at", "organisations"."id", "organisations"."name", "organisations"."name_key", "organisations"."roles", "organisations"."created_at", "organisations"."last_modified", "organisations"."deactivated_at" FROM (("memberships" INNER JOIN "users" ON ("memberships"."user_id" = "users"."id")) INNER JOIN "organisations" ON ("memberships"."organisation_id" = "organisations"."id")) WHERE (("memberships"."organisation_id" = :org) AND ("memberships"."user_id" = :user)) LIMIT 1 FOR SHARE;
-- The access token is signed here (no SQL); then audit::record.
INSERT INTO "audit_events" ("id", "created_at", "action", "outcome", "subject", "actor", "organisation_id", "target_id", "request_id", "source_ip", "reason") VALUES (gen_random_uuid(), now(), 'token.exchange', 'SUCCESS', :user, NULL, :org, NULL, 'f5b0c4d2-2f0e-4a5e-9c1e-000000000000', '127.0.0.1', NULL);
COMMIT;
