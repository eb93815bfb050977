-- Login throttling, shared by every instance: consecutive failed password
-- attempts, when the last one was, and until when the account accepts no
-- password comparison (back-off, then a temporary lock).
ALTER TABLE users ADD COLUMN failed_logins integer NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN last_failed_at text;
ALTER TABLE users ADD COLUMN throttled_until text;
