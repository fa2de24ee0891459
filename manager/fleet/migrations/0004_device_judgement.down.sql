-- Undoes 0004_device_judgement.up.sql: the block lists devices reported are forgotten.
DROP INDEX installed_refused;
ALTER TABLE devices DROP COLUMN blocked;
