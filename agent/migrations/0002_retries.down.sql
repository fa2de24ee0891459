-- Undoes 0002_retries.up.sql: counts of transient failures are forgotten (an older agent retries
-- such a version at every poll, as it always did).
DROP TABLE retries;
