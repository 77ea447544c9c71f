-- An account retired from the chart keeps the postings it holds and is refused for
-- new ones; NULL while the account is in use.
ALTER TABLE accounts ADD COLUMN retired_at TEXT;
