ALTER TABLE users DROP COLUMN throttled_until;
ALTER TABLE users DROP COLUMN last_failed_at;
ALTER TABLE users DROP COLUMN failed_logins;
