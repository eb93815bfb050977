-- The SQL of one successful refresh grant (src/service/grants/refresh.rs),
-- replayed by pgbench. Each pgbench client chains its own token family: the
-- first transaction starts from a seed row bench/run inserts, every later
-- one presents the token the previous one inserted. Statement for statement
-- what sts sends (bench/run compares the counts with pg_stat_statements);
-- the service makes ids and times itself, here the server does
-- (gen_random_uuid(), now()), and constant strings are literals.
-- Like the load generator's lanes, a client moves to a fresh family (the
-- next seed row) every `chain` grants, so chains stay as long as a real
-- login's (bench/README.md); that lookup is not part of a grant.
-- Variables: seed, org, k=0, chain, families (set with -D).
\if :k % :chain = 0
\set family least(:k / :chain, :families - 1)
SELECT 'pgbench-seed-' || :seed || '-' || :client_id || '-' || :family AS digest \gset
\endif
\set k :k + 1
\set next random(1, 9223372036854775806)
BEGIN;
-- refresh_tokens::find_by_digest: the presented token.
SELECT "refresh_tokens"."id", "refresh_tokens"."digest", "refresh_tokens"."family_id", "refresh_tokens"."user_id", "refresh_tokens"."organisation_id", "refresh_tokens"."issued_at", "refresh_tokens"."expires_at", "refresh_tokens"."family_expires_at", "refresh_tokens"."consumed_at", "refresh_tokens"."revoked_at" FROM "refresh_tokens" WHERE ("refresh_tokens"."digest" = :digest) LIMIT 1 \gset r_
-- grants::authorise → memberships::member_for_grant: user, membership and
-- organisation in one query, share-locked.
SELECT "users"."id", "users"."username", "users"."username_key", "users"."kind", "users"."password_hash", "users"."secret_digest", "users"."system_roles", "users"."created_at", "users"."last_modified", "users"."disabled_at", "organisations"."id", "organisations"."name", "organisations"."name_key", "organisations"."roles", "organisations"."created_at", "organisations"."last_modified", "organisations"."deactivated_at" FROM (("memberships" INNER JOIN "users" ON ("memberships"."user_id" = "users"."id")) INNER JOIN "organisations" ON ("memberships"."organisation_id" = "organisations"."id")) WHERE (("memberships"."organisation_id" = :org) AND ("memberships"."user_id" = :r_user_id)) LIMIT 1 FOR SHARE;
-- refresh_tokens::lock_family: the family's anchor row.
SELECT "refresh_tokens"."id" FROM "refresh_tokens" WHERE ("refresh_tokens"."id" = :r_family_id) FOR UPDATE;
-- refresh_tokens::consume: the conditional update that picks one winner.
UPDATE refresh_tokens SET consumed_at = now() WHERE id = :r_id AND consumed_at IS NULL AND revoked_at IS NULL;
-- store_token: the new token of the family.
INSERT INTO "refresh_tokens" ("id", "digest", "family_id", "user_id", "organisation_id", "issued_at", "expires_at", "family_expires_at", "consumed_at", "revoked_at") VALUES (gen_random_uuid(), :next, :r_family_id, :r_user_id, :org, now(), least(now() + interval '8 hours', :r_family_expires_at::timestamptz), :r_family_expires_at, NULL, NULL);
-- audit::record.
INSERT INTO "audit_events" ("id", "created_at", "action", "outcome", "subject", "actor", "organisation_id", "target_id", "request_id", "source_ip", "reason") VALUES (gen_random_uuid(), now(), 'token.refresh', 'SUCCESS', :r_user_id, NULL, :org, :r_family_id, 'f5b0c4d2-2f0e-4a5e-9c1e-000000000000', '127.0.0.1', NULL);
COMMIT;
\set digest :next
