-- Undoes 0002_fleet_summary.up.sql (the indexes and the count table are derived data).
DROP INDEX installed_rollout;
DROP INDEX devices_last_seen;
CREATE INDEX devices_last_seen ON devices (last_seen);
DROP INDEX installed_failed;
CREATE INDEX installed_failed ON installed (model, target) WHERE state = 'failed';
DROP TRIGGER installed_counts_update;
DROP TRIGGER installed_counts_delete;
DROP TRIGGER installed_counts_insert;
DROP TABLE installed_counts;
